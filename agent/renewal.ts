import { TRPCClientError } from '@trpc/client';
import { retryHintMs } from './backoff.js';
import type { AgentLogger } from './log.js';

export interface RenewableIdentity {
  identityToken: string;
  /** ISO 8601. */
  identityExpiresAt: string;
}

export interface RenewalTimerOptions {
  /** Asks the server for a renewed identity (`agent.renew`). */
  renew: () => Promise<RenewableIdentity>;
  /** Takes a renewed identity: saves it and arms the timer again from it. */
  adopt: (renewed: RenewableIdentity) => Promise<void>;
  logger: AgentLogger;
  /** @default Date.now */
  now?: () => number;
  /** @default Math.random */
  random?: () => number;
}

export interface RenewalTimer {
  /** (Re)starts the countdown from this identity; called at start and whenever one arrives. */
  arm(identity: RenewableIdentity): void;
  stop(): void;
}

/** setTimeout's longest delay (~24.8 days): a year-long identity's timer is armed in steps. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * The agent's own renewal: the server pushes a renewed identity when a third of its lifetime is
 * left; if none has come by the time a quarter to 30 % is left (jittered, so a fleet whose pushes
 * were all lost does not ask at once), the agent asks with `agent.renew`, and keeps asking (at the
 * server's retryAfterSeconds, or a quarter of what is left, within 1 s to 1 min) until it has one
 * or the identity runs out. A request made while disconnected waits for the next connection.
 */
export function createRenewalTimer(o: RenewalTimerOptions): RenewalTimer {
  const now = o.now ?? Date.now;
  const random = o.random ?? Math.random;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let current: RenewableIdentity | null = null;

  const wakeAt = (at: number, act: () => void) => {
    clearTimeout(timer);
    const wait = at - now();
    if (wait > MAX_TIMEOUT_MS) {
      timer = setTimeout(() => wakeAt(at, act), MAX_TIMEOUT_MS);
    } else timer = setTimeout(act, Math.max(0, wait));
    timer.unref();
  };

  const ask = async (identity: RenewableIdentity) => {
    if (stopped || current !== identity) return;
    const expiresAt = Date.parse(identity.identityExpiresAt);
    try {
      const renewed = await o.renew();
      if (stopped) return;
      // A push may have come meanwhile: keep whichever identity was issued later (not the one that
      // lasts longer: a server whose --identity-ttl was shortened renews with shorter ones).
      const held = current ?? identity;
      if ((issuedAtOf(renewed.identityToken) ?? 0) >= (issuedAtOf(held.identityToken) ?? 0))
        await o.adopt(renewed);
      return;
    } catch (error) {
      if (stopped || current !== identity) return;
      const data = error instanceof TRPCClientError ? (error.data as Record<string, unknown>) : undefined;
      const hint = retryHintMs(data?.retryAfterSeconds);
      const left = expiresAt - now();
      if (left <= 0) return;
      const retryMs = hint ?? Math.min(60_000, Math.max(1000, left / 4));
      // Not due by the server's clock (it answers RATE_LIMITED with a time): nothing went wrong.
      if (hint === null)
        o.logger.warn('could not renew the identity; trying again', {
          error: (error as Error).message,
          retryInSeconds: Math.round(retryMs / 1000),
        });
      wakeAt(now() + retryMs + random() * Math.min(1000, retryMs / 4), () => void ask(identity));
    }
  };

  return {
    arm(identity) {
      if (stopped) return;
      current = identity;
      const expiresAt = Date.parse(identity.identityExpiresAt);
      const issuedAt = issuedAtOf(identity.identityToken) ?? now();
      const lifetime = Math.max(0, expiresAt - issuedAt);
      // Later than the server's push (a third left), so the push normally wins and this stays idle.
      wakeAt(expiresAt - lifetime * (0.25 + 0.05 * random()), () => void ask(identity));
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** The `iat` of a JWT (ms), read without checking the signature: the agent only times itself by it. */
export function issuedAtOf(token: string): number | null {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'));
    return typeof payload?.iat === 'number' ? payload.iat * 1000 : null;
  } catch {
    return null;
  }
}
