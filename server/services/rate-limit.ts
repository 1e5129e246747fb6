import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { DomainError } from '../../shared/errors.js';
import { keyIdOf, PROVISIONING_KEY_PREFIX } from '../../shared/protocol.js';
import { limitedAs } from './addresses.js';
import type { AuditLog } from './audit.js';

export interface RateLimits {
  /** Enrollment requests per source address per minute. @default 600 */
  enrollPerAddressPerMinute: number;
  /** Failed enrollments per source address per 10 minutes. @default 60 */
  enrollFailuresPerAddress: number;
  /**
   * Failed enrollments naming one key id per 10 minutes, from anywhere: guessing one key's secret
   * from many addresses still hits this wall. @default 100
   */
  enrollFailuresPerKey: number;
  /** Refused session handshakes per source address per 10 minutes. @default 120 */
  handshakeFailuresPerAddress: number;
  /** Admin calls without a valid admin key per source address per minute, before it gets 429. @default 10 */
  adminAuthFailuresPerMinute: number;
  /**
   * Sessions one connector may open per minute (handshakes whose identity checked out), before its
   * handshakes are closed 4429 with a retry-after (see ConnectRate). @default 30
   */
  sessionsPerConnectorPerMinute: number;
}

/** What the limiter counts in /metrics (prom-client counters). */
export interface LimiterMetrics {
  adminAuthFailures: { inc(): void };
  adminAuthRateLimited: { inc(): void };
}

export const DEFAULT_RATE_LIMITS: RateLimits = {
  enrollPerAddressPerMinute: 600,
  enrollFailuresPerAddress: 60,
  enrollFailuresPerKey: 100,
  handshakeFailuresPerAddress: 120,
  adminAuthFailuresPerMinute: 10,
  sessionsPerConnectorPerMinute: 30,
};

const TEN_MINUTES_S = 600;

/**
 * Limits on the unauthenticated paths (rate-limiter-flexible, in memory: one server process owns a
 * data dir, so there is nothing to share). Refusals say when to retry. An address is counted as
 * `limitedAs` says (an IPv6 one as its /64).
 */
export class AbuseLimiter {
  private readonly perAddress: RateLimiterMemory;
  private readonly failuresByAddress: RateLimiterMemory;
  private readonly failuresByKey: RateLimiterMemory;
  private readonly handshakeFailures: RateLimiterMemory;
  private readonly adminAuthFailures: RateLimiterMemory;

  constructor(
    private readonly limits: RateLimits,
    private readonly audit: AuditLog,
    private readonly metrics?: LimiterMetrics,
  ) {
    this.adminAuthFailures = new RateLimiterMemory({
      points: limits.adminAuthFailuresPerMinute,
      duration: 60,
    });
    this.perAddress = new RateLimiterMemory({ points: limits.enrollPerAddressPerMinute, duration: 60 });
    this.failuresByAddress = new RateLimiterMemory({
      points: limits.enrollFailuresPerAddress,
      duration: TEN_MINUTES_S,
    });
    this.failuresByKey = new RateLimiterMemory({
      points: limits.enrollFailuresPerKey,
      duration: TEN_MINUTES_S,
    });
    this.handshakeFailures = new RateLimiterMemory({
      points: limits.handshakeFailuresPerAddress,
      duration: TEN_MINUTES_S,
    });
  }

  /**
   * Throws RATE_LIMITED when this address has used up its requests, or, for a key the server did
   * not make (`authentic` false: a guess), when this address or the key id it names has used up its
   * failed attempts. A key the server made goes through those two walls, as a genuine agent's
   * handshake does: key ids are no secret (every enrolled host's token carries one, read-only
   * admins see them), so otherwise anyone could keep a group's valid key, or every host behind a
   * NAT, from enrolling with a hundred made-up secrets every ten minutes.
   *
   * A guess, which can only fail, is counted here and judged by the count it makes: read before the
   * work and counted after it, a burst sent at once all passed the walls (500 made-up keys from one
   * address, 370 answered 401 against a limit of 60). Answers whether the attempt was counted so
   * (then `enrollFailed` is not called for it).
   */
  async enrollAttempt(
    address: string,
    presentedKey: string,
    authentic: () => boolean,
  ): Promise<{ counted: boolean }> {
    const keyId = keyIdOf(presentedKey, PROVISIONING_KEY_PREFIX, 'pk');
    try {
      await this.perAddress.consume(limitedAs(address));
    } catch (error) {
      return this.refuse(error, address, keyId);
    }
    if (authentic()) return { counted: false };
    const byAddress = await this.failuresByAddress.penalty(limitedAs(address), 1);
    if (byAddress.consumedPoints > this.limits.enrollFailuresPerAddress)
      await this.refuse(byAddress, address, keyId);
    if (keyId) {
      const byKey = await this.failuresByKey.penalty(keyId, 1);
      if (byKey.consumedPoints > this.limits.enrollFailuresPerKey) await this.refuse(byKey, address, keyId);
    }
    return { counted: true };
  }

  /** Counts a failed enrollment with a key the server made (expired, used up, of a deleted group). */
  async enrollFailed(address: string, presentedKey: string): Promise<void> {
    const keyId = keyIdOf(presentedKey, PROVISIONING_KEY_PREFIX, 'pk');
    await this.failuresByAddress.penalty(limitedAs(address), 1);
    if (keyId) await this.failuresByKey.penalty(keyId, 1);
  }

  /** Seconds to wait before this address may try a handshake again, or 0. */
  async handshakeRetryAfter(address: string): Promise<number> {
    const state = await this.handshakeFailures.get(limitedAs(address));
    if (!state || state.remainingPoints > 0) return 0;
    return Math.ceil(state.msBeforeNext / 1000);
  }

  async handshakeFailed(address: string): Promise<void> {
    await this.handshakeFailures.penalty(limitedAs(address), 1);
  }

  /**
   * Answers an admin call that came without a valid admin key (`refusal`: ADMIN_KEY_INVALID): counts
   * it against its address, audits it as a security event (coalesced: one event per address and
   * window, with a count) and returns the error to throw: `refusal` itself, or RATE_LIMITED with
   * retryAfterSeconds once the address has used up its failures for the window.
   *
   * Only failures are limited: a valid key from a blocked address is still let in. Admin keys carry
   * 256 random bits, so what the limit protects is not the key (no rate of guessing finds one) but
   * the server's time and the audit log, and turning away valid keys would let any stranger who
   * shares an admin's address (a NAT, a VPN exit) lock the admins out.
   */
  /** Whether this address has used up its failed admin-key attempts for the window. */
  async adminAuthBlocked(address: string): Promise<boolean> {
    const state = await this.adminAuthFailures.get(limitedAs(address));
    return state !== null && state.remainingPoints <= 0;
  }

  async adminAuthFailed(address: string, refusal: DomainError, path: string): Promise<DomainError> {
    this.metrics?.adminAuthFailures.inc();
    // Counted first, then judged by the count that answers: of a burst sent at once (each past the
    // check before its key was looked at), 500 made-up keys were 500 × 401 when each read the count
    // before any was added.
    const state = await this.adminAuthFailures.penalty(limitedAs(address), 1);
    const blocked = state.consumedPoints > this.limits.adminAuthFailuresPerMinute;
    const reason = blocked ? 'RATE_LIMITED' : refusal.reason;
    await this.audit.recordRefusal({
      type: 'admin.refused',
      actor: { kind: 'anonymous' },
      reason,
      security: true,
      remoteAddress: address,
      details: { path },
    });
    if (!blocked) return refusal;
    this.metrics?.adminAuthRateLimited.inc();
    const retryAfterSeconds = Math.max(1, Math.ceil(state.msBeforeNext / 1000));
    return new DomainError(
      'RATE_LIMITED',
      `Too many calls without a valid admin key from this address; retry in ${retryAfterSeconds} s.`,
      { retryAfterSeconds },
    );
  }

  private async refuse(state: unknown, address: string, keyId: string | null): Promise<never> {
    const retryAfterSeconds =
      state instanceof RateLimiterRes ? Math.max(1, Math.ceil(state.msBeforeNext / 1000)) : 60;
    // Coalesced: one line per address and window, however fast a stranger retries.
    await this.audit.recordRefusal({
      type: 'enrollment.refused',
      actor: { kind: 'agent', connectorId: null },
      outcome: 'refused',
      reason: 'RATE_LIMITED',
      security: true,
      remoteAddress: address,
      keyId,
    });
    throw new DomainError('RATE_LIMITED', `Too many attempts; retry in ${retryAfterSeconds} s.`, {
      retryAfterSeconds,
    });
  }
}
