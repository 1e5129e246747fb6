import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { DomainError, type ErrorReason } from '../../shared/errors.js';
import { hostFactsDigest } from '../../shared/host-facts.js';
import {
  CLOSE_CODES,
  replacedCloseReason,
  type SessionEvent,
  TERMINATION_ACK_TIMEOUT_MS,
} from '../../shared/protocol.js';
import { type HostFacts, sessionParamsSchema } from '../../shared/schemas.js';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { AuditLog, RecordOptions } from '../services/audit.js';
import type { ConnectorService } from '../services/connectors.js';
import type { Policy, Presence } from '../services/deps.js';
import type { DomainEvent, DomainEvents } from '../services/events.js';
import type { ExpectedProofBinding, IdentityAuthority } from '../services/identity.js';
import { unverifiedPayload } from '../services/jws.js';
import type { Termination } from '../services/views.js';
import type { Store } from '../store/store.js';
import { type AgentSession, type Corkable, LiveSession } from './live-session.js';
import { RenewalSchedule } from './renewal-schedule.js';
import { type FinalEvent, TerminationReceipts } from './termination-receipts.js';

export type { AgentSession, Corkable } from './live-session.js';

export interface SessionHubOptions {
  store: Store;
  identity: IdentityAuthority;
  connectors: ConnectorService;
  events: DomainEvents;
  audit: AuditLog;
  clock: Clock;
  policy: Policy;
  metrics: Metrics;
  logger: Logger;
  /**
   * Granularity of the renewal schedule, and how often it is looked at: a renewal is at most this
   * late. @default a hundredth of the identity lifetime, between 50 ms and 1 s
   */
  renewalBucketMs?: number;
  /** Identities renewed per event-loop turn when many fall due together. @default 64 */
  renewalsPerTurn?: number;
  /** Live sessions allowed from one source address (NAT'd fleets share one). @default Infinity */
  maxSessionsPerAddress?: number;
  /** Sessions of a group ended or told per event-loop turn when the whole group changes. @default 128 */
  sessionsPerTurn?: number;
  /**
   * How long an authenticated socket may go without subscribing to `agent.session` before it is
   * closed (4408, not final). The agent subscribes in the same breath as its handshake. @default 10000
   */
  subscribeTimeoutMs?: number;
  /**
   * After a signing key is activated, live sessions holding an identity signed by another key are
   * renewed at random times spread over this window, not all in one turn. @default 600000 (10 min)
   */
  rotationSpreadMs?: number;
}

/** Where a handshake comes from and what its proof must be bound to. */
export interface HandshakeOrigin {
  remoteAddress: string;
  ws: WebSocket;
  socket: Corkable | null;
  binding: ExpectedProofBinding;
  /**
   * Set while this address is blocked for failed handshakes: only a handshake naming an existing
   * connector (usable or revoked) is worth the signature checks; anything else is refused at once.
   */
  knownConnectorsOnly?: boolean;
}

/** Refusals of handshakes that proved nothing (no valid identity with a matching proof). */
export function provedNothing(reason: ErrorReason): boolean {
  return reason === 'IDENTITY_INVALID' || reason === 'PROOF_INVALID';
}

const SESSION_ENDED = 'This session has ended: another replaced it, or it was closed.';

/** When an identity is due for renewal: a third of its lifetime left. */
function renewalDueAt(agent: AgentSession): number {
  return agent.identityExpiresAt - (agent.identityExpiresAt - agent.identityIssuedAt) / 3;
}

/**
 * Every live agent session, by connector id: authenticates handshakes, keeps one session per
 * connector, and turns domain events (disable, revoke, delete, …) into pushes and closes.
 */
export class SessionHub implements Presence {
  private readonly sessions = new Map<string, LiveSession>();
  private readonly sessionsByAddress = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  /** Every subscribed session, by when its identity is due for renewal (a third of its lifetime left). */
  private readonly renewals: RenewalSchedule<LiveSession>;
  /** Sessions a revoke or delete ended, open until their agent acknowledges or the bound passes. */
  private readonly receipts = new TerminationReceipts({
    timeoutMs: TERMINATION_ACK_TIMEOUT_MS,
    // Confirmed: closed once the answer to agent.acknowledge has gone out.
    onSettled: (live, termination) =>
      termination.state === 'confirmed' ? setImmediate(() => this.closeEnded(live)) : this.closeEnded(live),
  });
  private readonly unsubscribe: () => void;
  /** The signing key the hub last saw active: a change means a rotation just activated. */
  private seenSignerKid: string;

  constructor(private readonly o: SessionHubOptions) {
    this.seenSignerKid = o.identity.activeKeyId;
    // The live side acts on a change the moment it is applied: a revoked agent is cut off before
    // the write that records it (see EventMoment), and a failed write keeps it off (UnsavedTerminations).
    this.unsubscribe = o.events.on('applied', (event) => this.onDomainEvent(event));
    const every = (ms: number, fn: () => void) => {
      const timer = setInterval(fn, ms);
      timer.unref();
      this.timers.push(timer);
    };
    // Last-seen times of live sessions are written when they end (and at shutdown), not on a timer:
    // a periodic touch of every live record made one journal entry the size of the whole fleet.
    // Renewals follow each identity's own deadline: checked hourly, any lifetime under ~1.5 h ran
    // out under connected agents. A look at the schedule's earliest bucket costs nothing when none is due.
    const bucketMs =
      o.renewalBucketMs ?? Math.min(1000, Math.max(50, Math.floor(o.policy.identityTtlMs / 100)));
    this.renewals = new RenewalSchedule(bucketMs);
    every(bucketMs, () => {
      this.rescheduleAfterRotation();
      this.renewDueIdentities().catch((error) => o.logger.error({ err: error }, 'identity renewal failed'));
    });
  }

  isConnected(connectorId: string): boolean {
    return this.sessions.has(connectorId);
  }

  get size(): number {
    return this.sessions.size;
  }

  /** The connector's live session (authenticated, subscribed or not), if it has one. */
  liveSession(connectorId: string): AgentSession | undefined {
    return this.sessions.get(connectorId)?.agent;
  }

  /**
   * Checks a handshake: the identity (signature, kid, iss, aud, expiry), the proof of possession
   * bound to it and to this connection, and that the connector exists and is not revoked. From then
   * on the socket is the connector's live session (replacing an older one), whether or not it ever
   * subscribes: revoke, delete and group changes reach it, it counts against the per-address limit,
   * and it is closed if it does not subscribe in time. Throws a coded DomainError.
   */
  async authenticate(connectionParams: unknown, from: HandshakeOrigin): Promise<AgentSession> {
    const parsed = sessionParamsSchema.safeParse(connectionParams);
    if (!parsed.success)
      throw new DomainError('IDENTITY_INVALID', 'The session needs connectionParams {identity, proof}.');
    if (from.knownConnectorsOnly && !this.namesKnownConnector(parsed.data.identity))
      throw new DomainError('IDENTITY_INVALID');
    const claims = await this.o.identity.verifyIdentity(parsed.data.identity);
    this.o.identity.verifyProof(parsed.data.proof, parsed.data.identity, claims.jkt, from.binding);
    try {
      this.requireUsable(claims.connectorId, claims.jkt);
    } catch (error) {
      this.confirmToldAtHandshake(error, claims, from.remoteAddress);
      throw error;
    }
    this.requireRoomFor(claims.connectorId, from.remoteAddress);
    const agent: AgentSession = {
      connectorId: claims.connectorId,
      groupId: claims.groupId,
      provisioningKeyId: claims.provisioningKeyId,
      jkt: claims.jkt,
      identityIssuedAt: claims.issuedAt,
      identityExpiresAt: claims.expiresAt,
      identityKeyId: claims.keyId,
      remoteAddress: from.remoteAddress,
      ws: from.ws,
      socket: from.socket,
    };
    this.admit(agent);
    return agent;
  }

  /**
   * Checks, for a call over an agent's socket, that its session is still the connector's live one
   * and the connector still usable: a revoke, a delete or a newer session ends what it may do.
   */
  requireLive(agent: AgentSession): void {
    this.requireUsable(agent.connectorId, agent.jkt);
    if (this.sessionOf(agent).ending) throw new DomainError('IDENTITY_INVALID', SESSION_ENDED);
  }

  /** The hub's session for `agent`'s socket; IDENTITY_INVALID once another replaced it or it closed. */
  private sessionOf(agent: AgentSession): LiveSession {
    const live = this.sessions.get(agent.connectorId);
    if (live?.agent !== agent) throw new DomainError('IDENTITY_INVALID', SESSION_ENDED);
    return live;
  }

  /** Checks that `agent` is a session a revoke or delete ended and that owes its acknowledgement. */
  requireEnding(agent: AgentSession): void {
    if (!this.receipts.awaitsAcknowledgement(agent))
      throw new DomainError('IDENTITY_INVALID', 'This session is not waiting for an acknowledgement.');
  }

  /**
   * `agent.acknowledge`: the agent heard its session's final event and wiped its identity. Settles
   * the revoke or delete waiting on it as confirmed, and records and audits the confirmation.
   */
  acknowledgeTermination(agent: AgentSession, event: FinalEvent): void {
    const now = this.o.clock.now();
    if (!this.receipts.acknowledge(agent, event, now))
      throw new DomainError('VALIDATION_FAILED', `This session did not end with a ${event} event.`);
    this.o.connectors.confirmTermination(agent.connectorId, {
      event,
      groupId: agent.groupId,
      at: now,
      from: agent.remoteAddress,
      via: 'acknowledgement',
    });
  }

  /** What became of the session a revoke or delete of this connector just ended (see TerminationReceipts). */
  termination(connectorId: string): Promise<Termination> {
    return this.receipts.outcome(connectorId);
  }

  /**
   * Records a refused handshake and closes the socket: with the final "refused" code, or with the
   * retry-later code when the refusal is RATE_LIMITED.
   */
  refuse(ws: WebSocket, reason: ErrorReason, remoteAddress: string, retryAfterSeconds?: number): void {
    this.o.metrics.sessionRefusals.inc({ reason });
    this.o.logger.info({ reason, remoteAddress }, 'session refused');
    this.o.audit
      .recordRefusal({
        type: 'session.refused',
        actor: { kind: 'agent', connectorId: null },
        outcome: 'refused',
        reason,
        security: reason === 'CONNECTOR_REVOKED' || reason === 'PROOF_INVALID',
        remoteAddress,
      })
      .catch((error) => this.o.logger.error({ err: error }, 'audit write failed'));
    if (reason !== 'RATE_LIMITED') ws.close(CLOSE_CODES.REFUSED, reason);
    else if (retryAfterSeconds === undefined) ws.close(CLOSE_CODES.RATE_LIMITED, reason);
    else ws.close(CLOSE_CODES.RATE_LIMITED, `${reason} retry-after=${retryAfterSeconds}`);
  }

  /**
   * The `agent.session` subscription of a socket the handshake made the connector's live session:
   * yields `ready`, then whatever the admin side pushes, until the session ends.
   */
  async *stream(agent: AgentSession, signal: AbortSignal): AsyncGenerator<SessionEvent> {
    const live = this.sessionOf(agent);
    if (live.subscribed) throw new DomainError('VALIDATION_FAILED', 'This socket already has its session.');
    // Ended before it subscribed (revoked, deleted): its socket was closed with the final code.
    if (live.ending) return;
    const record = this.requireUsable(agent.connectorId, agent.jkt);
    live.subscribed = true;
    clearTimeout(live.subscribeDeadline);
    try {
      yield {
        type: 'ready',
        connectorId: agent.connectorId,
        groupId: agent.groupId,
        status: record.effectiveStatus,
        // A few µs per connect; it spares the agent a report of facts the server already holds.
        // A hand-edited or damaged store may lack them: then the agent reports.
        hostDigest: record.host ? hostFactsDigest(record.host) : null,
      };
      await this.renewIfDue(live).catch((error) =>
        this.o.logger.error({ err: error, connectorId: agent.connectorId }, 'identity renewal failed'),
      );
      this.scheduleRenewal(live);
      for (;;) {
        const event = await live.next(signal);
        if (!event) break;
        yield event;
      }
    } finally {
      // The session is the subscription: a socket that dropped it (or was told to end) goes too, so
      // nothing authenticated stays open outside the hub's reach.
      if (!live.ending) live.end(null, 1000, 'session ended', this.o.clock.now());
      this.closeEnded(live);
      this.detach(live);
    }
  }

  /**
   * Pushes a renewed identity to every subscribed session whose identity is due (a third of its
   * lifetime left), from the schedule, `renewalsPerTurn` per event-loop turn: identities issued
   * together fall due together (a fleet enrolled in a minute), and signing, recording and auditing
   * thousands in one turn would stall handshakes, revokes and admin calls behind them.
   */
  async renewDueIdentities(): Promise<number> {
    const due = this.renewals.popDue(this.o.clock.now());
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
   * `agent.renew`: a new identity for the session's connector and key, recorded and audited as a
   * pushed one is. Refused (RATE_LIMITED, with retryAfterSeconds) before half the identity's
   * lifetime has passed, so a session can cost at most one signature per half lifetime; the
   * agent asks later than that, at about a quarter left, when no push came.
   */
  async renewOnRequest(agent: AgentSession): Promise<{ identityToken: string; identityExpiresAt: string }> {
    const live = this.sessionOf(agent);
    if (live.ending) throw new DomainError('IDENTITY_INVALID', SESSION_ENDED);
    const halfLife = agent.identityIssuedAt + (agent.identityExpiresAt - agent.identityIssuedAt) / 2;
    const wait = halfLife - this.o.clock.now();
    if (wait > 0) {
      const retryAfterSeconds = Math.ceil(wait / 1000);
      const message = `The identity is not due for renewal; retry in ${retryAfterSeconds} s.`;
      throw new DomainError('RATE_LIMITED', message, { retryAfterSeconds });
    }
    const renewed = await this.renew(live, 'request');
    return { identityToken: renewed.token, identityExpiresAt: new Date(renewed.expiresAt).toISOString() };
  }

  /** Ends every session without a final code (server shutdown): agents reconnect to the next server. */
  closeAll(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.unsubscribe();
    this.receipts.settleAll();
    this.recordLastSeen();
    for (const live of this.sessions.values()) live.agent.ws.close(1001, 'server shutting down');
  }

  private async renewIfDue(live: LiveSession): Promise<boolean> {
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
      if (this.isCurrent(live)) this.renewals.add(live, this.o.clock.now() + retryMs);
    }
    return false;
  }

  /** Puts a live, subscribed session in the schedule at its identity's renewal time. */
  private scheduleRenewal(live: LiveSession): void {
    if (this.isCurrent(live)) this.renewals.add(live, this.dueAt(live));
  }

  /**
   * When the session's identity is due: at a third of its lifetime left, or, if another key than
   * the active one signed it, at its random time within the rotation spread, whichever is first.
   */
  private dueAt(live: LiveSession): number {
    const due = renewalDueAt(live.agent);
    if (live.agent.identityKeyId === this.o.identity.activeKeyId) return due;
    live.rotationDueAt ??= this.o.clock.now() + Math.random() * (this.o.rotationSpreadMs ?? 600_000);
    return Math.min(due, live.rotationDueAt);
  }

  /**
   * Once a rotation has activated (checked on every tick of the schedule: activation goes by the
   * clock), moves every subscribed session whose identity another key signed to its time within
   * the spread, so the fleet moves to the new key over the window, not in one burst.
   */
  private rescheduleAfterRotation(): void {
    const active = this.o.identity.activeKeyId;
    if (active === this.seenSignerKid) return;
    this.seenSignerKid = active;
    let moved = 0;
    for (const live of this.sessions.values()) {
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

  private isCurrent(live: LiveSession): boolean {
    return this.sessions.get(live.agent.connectorId) === live && !live.ending;
  }

  /**
   * Issues a new identity for the session's connector and key, makes it the session's, records and
   * audits it, and schedules the next renewal from it: the one path of pushed and requested renewals.
   */
  private async renew(live: LiveSession, via: 'push' | 'request') {
    const { agent } = live;
    const renewed = await this.o.identity.issue(
      {
        connectorId: agent.connectorId,
        groupId: agent.groupId,
        provisioningKeyId: agent.provisioningKeyId,
        jkt: agent.jkt,
      },
      this.o.policy.identityTtlMs,
    );
    agent.identityIssuedAt = renewed.issuedAt;
    agent.identityExpiresAt = renewed.expiresAt;
    agent.identityKeyId = renewed.keyId;
    live.rotationDueAt = null;
    this.o.connectors.recordIdentity(agent.connectorId, {
      issuedAt: renewed.issuedAt,
      expiresAt: renewed.expiresAt,
      keyId: renewed.keyId,
    });
    this.audit('identity.renewed', agent, { expiresAt: new Date(renewed.expiresAt).toISOString(), via });
    this.scheduleRenewal(live);
    return renewed;
  }

  private requireUsable(
    connectorId: string,
    jkt: string,
  ): { effectiveStatus: 'enabled' | 'disabled'; host: HostFacts | undefined } {
    // A revoke or delete whose write failed has told the agent already: its record must not let it back.
    const unsaved = this.o.connectors.unsavedTermination(connectorId);
    if (unsaved) throw new DomainError(unsaved === 'revoked' ? 'CONNECTOR_REVOKED' : 'CONNECTOR_NOT_FOUND');
    return this.o.store.read((view) => {
      const record = view.get('connectors', connectorId);
      if (!record) throw new DomainError('CONNECTOR_NOT_FOUND');
      if (record.status === 'revoked') throw new DomainError('CONNECTOR_REVOKED');
      // The record's thumbprint must match too: an identity is bound to the key pair that enrolled.
      if (record.keyThumbprint !== jkt) throw new DomainError('IDENTITY_INVALID');
      const group = view.get('groups', record.groupId);
      const disabled = record.status === 'disabled' || group?.status === 'disabled';
      return { effectiveStatus: disabled ? 'disabled' : 'enabled', host: record.host };
    });
  }

  /**
   * Refuses a new session from an address that already has its share, unless it replaces this
   * connector's own session from there. Handshakes in flight are not counted, so a burst may pass
   * the limit by the number of handshakes verified at once.
   */
  private requireRoomFor(connectorId: string, remoteAddress: string): void {
    const max = this.o.maxSessionsPerAddress ?? Number.POSITIVE_INFINITY;
    if ((this.sessionsByAddress.get(remoteAddress) ?? 0) < max) return;
    if (this.sessions.get(connectorId)?.agent.remoteAddress === remoteAddress) return;
    throw new DomainError('RATE_LIMITED', `Too many live sessions from ${remoteAddress}.`);
  }

  private countAddress(remoteAddress: string, delta: number): void {
    const count = (this.sessionsByAddress.get(remoteAddress) ?? 0) + delta;
    if (count > 0) this.sessionsByAddress.set(remoteAddress, count);
    else this.sessionsByAddress.delete(remoteAddress);
  }

  /** Makes an authenticated socket the connector's live session, ending the one it replaces. */
  private admit(agent: AgentSession): void {
    const { ws } = agent;
    // It closed while being authenticated: its close event is gone, so it must not be registered.
    if (ws.readyState !== ws.OPEN) return;
    const now = this.o.clock.now();
    const live = new LiveSession(agent, now);
    const previous = this.sessions.get(agent.connectorId);
    this.sessions.set(agent.connectorId, live);
    this.countAddress(agent.remoteAddress, 1);
    if (previous) this.countAddress(previous.agent.remoteAddress, -1);
    this.o.metrics.sessions.set(this.sessions.size);
    this.o.metrics.sessionConnects.inc();
    ws.once('close', () => this.detach(live));
    live.subscribeDeadline = setTimeout(() => {
      if (!live.subscribed && !live.ending)
        ws.close(CLOSE_CODES.HANDSHAKE_TIMEOUT, 'agent.session not subscribed in time');
    }, this.o.subscribeTimeoutMs ?? 10_000);
    live.subscribeDeadline.unref();
    this.o.connectors.recordConnection(agent.connectorId, {
      connectedAt: now,
      seenAt: now,
      remoteAddress: agent.remoteAddress,
      ...(previous ? { replacedFrom: previous.agent.remoteAddress } : {}),
    });
    if (previous) {
      // Two processes with one identity (a cloned host, a leaked identity file): the replaced
      // agent exits 6, told the new session's address. A reconnect that came before the server saw
      // its old socket die lands here too; that agent ignores the close of a socket it left.
      this.endSession(previous, null, CLOSE_CODES.REPLACED, replacedCloseReason(agent.remoteAddress), now);
      this.o.metrics.sessionReplacements.inc();
      this.audit(
        'session.replaced',
        agent,
        { previousRemoteAddress: previous.agent.remoteAddress, newRemoteAddress: agent.remoteAddress },
        { security: true },
      );
    }
    // Every connect is audited, but without an fsync of its own (it rides along with the next
    // write, within 250 ms): a fleet reconnecting after a restart is tens of thousands of them.
    // The per-connect log lines are debug for the same reason; /metrics counts them.
    this.audit('session.connected', agent, {}, { lazy: true });
    this.o.logger.debug(
      { connectorId: agent.connectorId, remoteAddress: agent.remoteAddress },
      'agent connected',
    );
  }

  /**
   * Ends a session: a subscribed one sends `event` and closes from its stream; one that never
   * subscribed has nothing to drain its queue, so its socket is closed here with the same code.
   * Told it was revoked or deleted, a subscribed one stays open for the agent's acknowledgement.
   */
  private endSession(
    live: LiveSession,
    event: SessionEvent | null,
    code: number,
    reason: string,
    now: number,
  ): void {
    const ended = live.ending !== null;
    live.end(event, code, reason, now);
    if (!live.subscribed) this.closeEnded(live);
    else if (!ended && (event?.type === 'revoked' || event?.type === 'deleted'))
      this.receipts.expect(live, event.type);
  }

  /**
   * Closes an ended session's socket with its code (unless it still waits for its acknowledgement),
   * and cuts off a peer that does not answer.
   */
  private closeEnded(live: LiveSession): void {
    const { ws } = live.agent;
    if (!live.ending || ws.readyState !== ws.OPEN || this.receipts.isWaiting(live)) return;
    const { code, reason, requestedAt } = live.ending;
    ws.once('close', () =>
      this.o.metrics.revokeCloseSeconds.observe((this.o.clock.now() - requestedAt) / 1000),
    );
    ws.close(code, reason);
    setTimeout(() => ws.terminate(), 2000).unref();
  }

  private detach(live: LiveSession): void {
    const { agent } = live;
    clearTimeout(live.subscribeDeadline);
    this.renewals.delete(live);
    if (this.sessions.get(agent.connectorId) !== live) return;
    this.sessions.delete(agent.connectorId);
    this.countAddress(agent.remoteAddress, -1);
    this.o.metrics.sessions.set(this.sessions.size);
    this.o.connectors.recordConnection(agent.connectorId, { seenAt: this.o.clock.now() });
    this.o.logger.debug({ connectorId: agent.connectorId }, 'agent disconnected');
  }

  /**
   * Whether an identity token names a connector that exists with the thumbprint the token claims,
   * read without checking its signature: a cheap filter before the signature checks. A revoked one
   * passes: its host must still be told (CONNECTOR_REVOKED, exit 4), not asked to retry.
   */
  private namesKnownConnector(token: string): boolean {
    const claims = unverifiedPayload(token);
    const jkt = (claims?.cnf as { jkt?: unknown } | undefined)?.jkt;
    if (typeof claims?.sub !== 'string' || typeof jkt !== 'string') return false;
    try {
      this.requireUsable(claims.sub, jkt);
      return true;
    } catch (error) {
      return error instanceof DomainError && error.reason === 'CONNECTOR_REVOKED';
    }
  }

  /**
   * A handshake whose identity and proof checked out was refused because its connector is revoked or
   * gone: the host holds that identity and is told now, which confirms a termination it missed.
   */
  private confirmToldAtHandshake(
    error: unknown,
    claims: { connectorId: string; groupId: string },
    remoteAddress: string,
  ): void {
    if (!(error instanceof DomainError)) return;
    const event =
      error.reason === 'CONNECTOR_REVOKED'
        ? 'revoked'
        : error.reason === 'CONNECTOR_NOT_FOUND'
          ? 'deleted'
          : null;
    if (event)
      this.o.connectors.confirmTermination(claims.connectorId, {
        event,
        groupId: claims.groupId,
        at: this.o.clock.now(),
        from: remoteAddress,
        via: 'handshake',
      });
  }

  private onDomainEvent(event: DomainEvent): void {
    const now = this.o.clock.now();
    switch (event.type) {
      case 'connector.status':
        this.sessions.get(event.connectorId)?.push(this.statusEvent(event.connectorId, 'connector'));
        break;
      case 'connector.revoked': {
        const live = this.sessions.get(event.connectorId);
        if (live)
          this.endSession(
            live,
            { type: 'revoked', reason: event.reason },
            CLOSE_CODES.REVOKED,
            'CONNECTOR_REVOKED',
            now,
          );
        break;
      }
      case 'connector.deleted': {
        const live = this.sessions.get(event.connectorId);
        if (live) this.endSession(live, { type: 'deleted' }, CLOSE_CODES.DELETED, 'CONNECTOR_NOT_FOUND', now);
        break;
      }
      case 'group.status':
        this.inSlices(event.connectorIds, (live) =>
          live.push(this.statusEvent(live.agent.connectorId, 'group')),
        );
        break;
      case 'group.deleted':
        this.inSlices(event.connectorIds, (live) =>
          this.endSession(live, { type: 'deleted' }, CLOSE_CODES.DELETED, 'CONNECTOR_NOT_FOUND', now),
        );
        break;
    }
  }

  /**
   * Acts on the live sessions among `connectorIds`, a slice per event-loop turn: ending or telling
   * a whole group at once (~0.5 ms of work per session here) stalled the loop for seconds with
   * 5,000 sessions, and admin calls, revokes and handshakes waited behind it. Status pushes read the
   * current state when they go out, so slices of a disable and a quick re-enable cannot leave a
   * session with the older one.
   */
  private inSlices(connectorIds: readonly string[], act: (live: LiveSession) => void): void {
    const perTurn = this.o.sessionsPerTurn ?? 128;
    let next = 0;
    const slice = () => {
      const end = Math.min(next + perTurn, connectorIds.length);
      // What a session is sent now (an event, tRPC's `stopped`, the close frame) leaves in one write
      // per socket at the end of this turn instead of one per frame.
      const corked: Corkable[] = [];
      for (; next < end; next++) {
        const live = this.sessions.get(connectorIds[next]!);
        if (!live) continue;
        const socket = live.agent.socket;
        if (socket) {
          socket.cork();
          corked.push(socket);
        }
        act(live);
      }
      if (corked.length > 0)
        setImmediate(() => {
          for (const socket of corked) socket.uncork();
        });
      if (next < connectorIds.length) setImmediate(slice);
    };
    slice();
  }

  private statusEvent(connectorId: string, scope: 'connector' | 'group'): SessionEvent {
    const status = this.o.store.read((view) => {
      const record = view.get('connectors', connectorId);
      const group = record ? view.get('groups', record.groupId) : undefined;
      return record?.status === 'disabled' || group?.status === 'disabled' ? 'disabled' : 'enabled';
    });
    return { type: 'status', status, scope };
  }

  private recordLastSeen(): void {
    const now = this.o.clock.now();
    for (const id of this.sessions.keys()) this.o.connectors.recordConnection(id, { seenAt: now });
  }

  private audit(
    type: string,
    agent: AgentSession,
    details: Record<string, unknown>,
    { security = false, ...options }: RecordOptions & { security?: boolean } = {},
  ): void {
    this.o.audit
      .record(
        {
          type,
          actor: { kind: 'agent', connectorId: agent.connectorId },
          remoteAddress: agent.remoteAddress,
          connectorId: agent.connectorId,
          groupId: agent.groupId,
          security,
          details,
        },
        options,
      )
      .catch((error) => this.o.logger.error({ err: error }, 'audit write failed'));
  }
}
