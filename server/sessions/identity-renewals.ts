import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { type AgentSessionService, renewalDueAt } from '../services/agent-sessions.js';
import type { IssuedIdentity } from '../services/identity.js';
import type { LiveSession } from './live-session.js';
import { RenewalSchedule } from './renewal-schedule.js';
import type { SessionRegistry } from './session-registry.js';

/** How soon a connector whose newest identity another session got is renewed again. */
const RENEWED_AGAIN_AFTER_MS = 60_000;

export interface IdentityRenewalsOptions {
  registry: SessionRegistry;
  agentSessions: AgentSessionService;
  clock: Clock;
  logger: Logger;
  /** Granularity of the schedule, and how often it is looked at: a renewal is at most this late. */
  bucketMs: number;
  /** Identities renewed per event-loop turn when many fall due together. @default 64 */
  renewalsPerTurn?: number | undefined;
  /**
   * After a signing key is activated, live sessions holding an identity signed by another key are
   * renewed at random times spread over this window, not all in one turn. @default 600000 (10 min)
   */
  rotationSpreadMs?: number | undefined;
}

/**
 * When each subscribed session's identity is renewed and pushed: by its own deadline (a third of its
 * lifetime left), earlier after a signing-key rotation (spread over a window), and on the agent's
 * request. The session hub ticks it every `bucketMs`.
 */
export class IdentityRenewals {
  /** Every subscribed session, by when its identity is due for renewal. */
  private readonly schedule: RenewalSchedule<LiveSession>;
  /** The signing key last seen active: a change means a rotation just activated. */
  private seenSignerKid: string;
  /** How many keys were retired when last looked: more means one was just retired. */
  private seenRetired: number;

  constructor(private readonly o: IdentityRenewalsOptions) {
    this.schedule = new RenewalSchedule(o.bucketMs);
    this.seenSignerKid = o.agentSessions.activeKeyId;
    this.seenRetired = o.agentSessions.retiredKeyIds().size;
  }

  /** Takes a session that ended out of the schedule. */
  forget(live: LiveSession): void {
    this.schedule.delete(live);
  }

  /**
   * Pushes a renewed identity to every scheduled session whose identity is due, `renewalsPerTurn`
   * per event-loop turn: identities issued together fall due together (a fleet enrolled in a
   * minute), and signing, recording and auditing thousands in one turn would stall handshakes,
   * revokes and admin calls behind them.
   */
  async renewDue(): Promise<number> {
    const due = this.schedule.popDue(this.o.clock.now());
    const perTurn = this.o.renewalsPerTurn ?? 64;
    let renewed = 0;
    for (let next = 0; next < due.length; next += perTurn) {
      if (next > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const slice = due.slice(next, next + perTurn);
      const results = await Promise.all(slice.map((live) => this.renewScheduled(live)));
      renewed += results.filter(Boolean).length;
    }
    return renewed;
  }

  /**
   * Checked on every tick of the schedule (activation goes by the clock). Once a rotation has
   * activated, moves every subscribed session whose identity another key signed to its time within
   * the spread, so the fleet moves to the new key over the window, not in one burst; once a key is
   * retired, moves the sessions it signed for to now.
   */
  rescheduleAfterRotation(): void {
    this.spreadAfterActivation();
    // After the spread: a key retired in the same tick moves its sessions to now, not back into it.
    this.renewRetiredNow();
  }

  private spreadAfterActivation(): void {
    const active = this.o.agentSessions.activeKeyId;
    if (active === this.seenSignerKid) return;
    this.seenSignerKid = active;
    let moved = 0;
    for (const live of this.o.registry.values()) {
      if (!live.subscribed || live.agent.identityKeyId === active) continue;
      live.rotationDueAt = null;
      this.scheduleRenewal(live);
      moved++;
    }
    this.o.logger.info(
      { kid: active, sessions: moved },
      'signing key activated; renewing identities signed by others',
    );
  }

  /**
   * A key retired (with --force) while live sessions hold identities it signed: those are renewed
   * at once, not at their time within the rotation spread. Until then each of them would be refused
   * at its next handshake (a server restart, a dropped link), and its agent would wipe it.
   */
  private renewRetiredNow(): void {
    const retired = this.o.agentSessions.retiredKeyIds();
    if (retired.size === this.seenRetired) return;
    this.seenRetired = retired.size;
    const now = this.o.clock.now();
    let moved = 0;
    for (const live of this.o.registry.values()) {
      if (!live.subscribed || !retired.has(live.agent.identityKeyId)) continue;
      live.rotationDueAt = now;
      this.scheduleRenewal(live);
      moved++;
    }
    if (moved > 0)
      this.o.logger.warn(
        { sessions: moved },
        'a signing key was retired while live sessions held identities it signed; renewing them now',
      );
  }

  /**
   * Issues a new identity for the session (see AgentSessionService.renew), makes it the session's,
   * and schedules the next renewal from it.
   */
  renew(live: LiveSession, via: 'push' | 'request'): Promise<IssuedIdentity> {
    // One at a time per session: the once-per-half-lifetime check passes for every call that
    // arrives before the first renewal is recorded, and 100 requests sent at once got 100
    // signatures and 100 audit events. They share the one under way instead.
    if (live.renewing) return live.renewing;
    const renewing = this.renewNow(live, via).finally(() => {
      live.renewing = null;
    });
    live.renewing = renewing;
    return renewing;
  }

  private async renewNow(live: LiveSession, via: 'push' | 'request'): Promise<IssuedIdentity> {
    const renewed = await this.o.agentSessions.renew(live.agent, via);
    live.agent.identityIssuedAt = renewed.issuedAt;
    live.agent.identityExpiresAt = renewed.expiresAt;
    live.agent.identityKeyId = renewed.keyId;
    live.rotationDueAt = null;
    this.scheduleRenewal(live);
    return renewed;
  }

  /** Renews the session's identity and pushes it, if it is due and the session not ending. */
  async renewIfDue(live: LiveSession): Promise<boolean> {
    if (this.dueAt(live) > this.o.clock.now() || live.ending) return false;
    const renewed = await this.renew(live, 'push');
    live.push({
      type: 'identity',
      identityToken: renewed.token,
      identityExpiresAt: new Date(renewed.expiresAt).toISOString(),
    });
    return true;
  }

  /** A session the schedule handed out: renewed if still live and due, else put back where it belongs. */
  private async renewScheduled(live: LiveSession): Promise<boolean> {
    try {
      if (await this.renewIfDue(live)) return true;
      this.scheduleRenewal(live);
    } catch (error) {
      this.o.logger.error({ err: error, connectorId: live.agent.connectorId }, 'identity renewal failed');
      // Tried again a twentieth of the lifetime later (within 1 s to 1 min), before it runs out.
      const { identityIssuedAt, identityExpiresAt } = live.agent;
      const retryMs = Math.min(60_000, Math.max(1000, (identityExpiresAt - identityIssuedAt) / 20));
      if (this.o.registry.isCurrent(live)) this.schedule.add(live, this.o.clock.now() + retryMs);
    }
    return false;
  }

  /** Puts a live, subscribed session in the schedule at its identity's renewal time. */
  scheduleRenewal(live: LiveSession): void {
    if (this.o.registry.isCurrent(live)) this.schedule.add(live, this.dueAt(live));
  }

  /**
   * When the session's identity is due: at a third of its lifetime left, or, if another key than
   * the active one signed it, at its random time within the rotation spread, whichever is first.
   */
  private dueAt(live: LiveSession): number {
    let due = renewalDueAt(live.agent);
    if (live.agent.identityKeyId !== this.o.agentSessions.activeKeyId) {
      live.rotationDueAt ??= this.o.clock.now() + Math.random() * (this.o.rotationSpreadMs ?? 600_000);
      due = Math.min(due, live.rotationDueAt);
    }
    return Math.max(due, this.notBefore(live));
  }

  /**
   * The earliest a session may be renewed, pushed or asked for (0: any time). A newer identity of
   * this connector was issued to a session before this one (its host missed the push, or something
   * reconnects in a loop with an old token): not renewed again within a minute of it (a sixth of the
   * lifetime for short ones), nor later than a sixth of the lifetime before this token expires. Each
   * connect of such a loop signed and wrote an identity, pushed or asked for with agent.renew.
   */
  notBefore(live: LiveSession): number {
    const { identityIssuedAt, identityExpiresAt } = live.agent;
    const latest = this.o.agentSessions.latestIssuedAt(live.agent.connectorId);
    if (latest === null || latest <= identityIssuedAt + 1000) return 0;
    const sixth = (identityExpiresAt - identityIssuedAt) / 6;
    return Math.min(latest + Math.min(RENEWED_AGAIN_AFTER_MS, sixth), identityExpiresAt - sixth);
  }
}
