import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { DomainError, type ErrorReason } from '../../shared/errors.js';
import { hostFactsDigest } from '../../shared/host-facts.js';
import { CLOSE_CODES, replacedCloseReason, type SessionEvent } from '../../shared/protocol.js';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { AgentSessionService } from '../services/agent-sessions.js';
import type { ConnectorService } from '../services/connectors.js';
import type { DomainEvent, DomainEvents } from '../services/events.js';
import type { HandshakeChecks } from '../services/handshake-checks.js';
import type { IdentityClaims } from '../services/identity.js';
import { closeWithin } from './closing.js';
import { IdentityRenewals } from './identity-renewals.js';
import { type AgentSession, type Corkable, LiveSession } from './live-session.js';
import type { SessionRegistry } from './session-registry.js';
import type { FinalEvent } from './termination-receipts.js';

export type { AgentSession, Corkable } from './live-session.js';

export interface SessionHubOptions {
  /** The live sessions, which the hub fills and the services read (as their Presence). */
  registry: SessionRegistry;
  agentSessions: AgentSessionService;
  /** Whether a live session's connector may keep it, after a change. */
  handshakes: Pick<HandshakeChecks, 'requireUsable'>;
  connectors: Pick<ConnectorService, 'confirmTermination'>;
  events: DomainEvents;
  clock: Clock;
  /** How long identities live: sets the renewal schedule's granularity. */
  identityTtlMs: number;
  metrics: Metrics;
  logger: Logger;
  /**
   * Granularity of the renewal schedule, and how often it is looked at: a renewal is at most this
   * late. @default a hundredth of the identity lifetime, between 50 ms and 1 s
   */
  renewalBucketMs?: number | undefined;
  /** Identities renewed per event-loop turn when many fall due together. @default 64 */
  renewalsPerTurn?: number | undefined;
  /** Sessions of a group ended or told per event-loop turn when the whole group changes. @default 128 */
  sessionsPerTurn?: number | undefined;
  /**
   * How long an authenticated socket may go without subscribing to `agent.session` before it is
   * closed (4408, not final). The agent subscribes in the same breath as its handshake. @default 10000
   */
  subscribeTimeoutMs?: number | undefined;
  /**
   * After a signing key is activated, live sessions holding an identity signed by another key are
   * renewed at random times spread over this window, not all in one turn. @default 600000 (10 min)
   */
  rotationSpreadMs?: number | undefined;
}

const SESSION_ENDED = 'This session has ended: another replaced it, or it was closed.';
/** WebSocket "service restart": not final, the agent reconnects (to this replica or another). */
const SESSION_LOST_CODE = 1012;

/**
 * Every live agent session's socket: makes an authenticated one its connector's session (one per
 * connector), streams its events, and turns domain events (disable, revoke, delete, …) into pushes
 * and closes. Who may connect HandshakeChecks decides; what is recorded of it, the AgentSessionService.
 */
export class SessionHub {
  private readonly sessions: SessionRegistry;
  private readonly renewals: IdentityRenewals;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly unsubscribe: () => void;

  constructor(private readonly o: SessionHubOptions) {
    this.sessions = o.registry;
    // The live side acts on a change the moment it is applied: a revoked agent is cut off before
    // the write that records it (see EventMoment), and a failed write keeps it off (UnsavedTerminations).
    this.unsubscribe = o.events.on('applied', (event) => this.onDomainEvent(event));
    o.registry.onLostElsewhere((live, replacedBy) => this.endLostSession(live, replacedBy));
    const every = (ms: number, fn: () => void) => {
      const timer = setInterval(fn, ms);
      timer.unref();
      this.timers.push(timer);
    };
    // Last-seen times of live sessions are written when they end (and at shutdown), not on a timer:
    // a periodic touch of every live record made one journal entry the size of the whole fleet.
    // Renewals follow each identity's own deadline: checked hourly, any lifetime under ~1.5 h ran
    // out under connected agents. A look at the schedule's earliest bucket costs nothing when none is due.
    const bucketMs = o.renewalBucketMs ?? Math.min(1000, Math.max(50, Math.floor(o.identityTtlMs / 100)));
    this.renewals = new IdentityRenewals({
      registry: o.registry,
      agentSessions: o.agentSessions,
      clock: o.clock,
      logger: o.logger,
      bucketMs,
      renewalsPerTurn: o.renewalsPerTurn,
      rotationSpreadMs: o.rotationSpreadMs,
    });
    every(bucketMs, () => {
      this.renewals.rescheduleAfterRotation();
      this.renewDueIdentities().catch((error) => o.logger.error({ err: error }, 'identity renewal failed'));
    });
  }

  get size(): number {
    return this.sessions.size;
  }

  /** The connector's live session (authenticated, subscribed or not), if it has one. */
  liveSession(connectorId: string): AgentSession | undefined {
    return this.sessions.get(connectorId)?.agent;
  }

  /**
   * Makes a socket whose handshake checked out (HandshakeChecks.authenticate) the connector's
   * live session, replacing an older one, whether or not it ever subscribes: revoke, delete and
   * group changes reach it, it counts against the per-address limit, and it is closed if it does
   * not subscribe in time. Throws RATE_LIMITED when its address has its share of sessions.
   */
  admit(claims: IdentityClaims, ws: WebSocket, socket: Corkable | null, remoteAddress: string): AgentSession {
    this.sessions.requireRoomFor(claims.connectorId, remoteAddress);
    const agent: AgentSession = {
      connectorId: claims.connectorId,
      groupId: claims.groupId,
      provisioningKeyId: claims.provisioningKeyId,
      jkt: claims.jkt,
      identityIssuedAt: claims.issuedAt,
      identityExpiresAt: claims.expiresAt,
      identityKeyId: claims.keyId,
      remoteAddress,
      ws,
      socket,
    };
    // It closed while being authenticated: its close event is gone, so it must not be registered.
    if (ws.readyState !== ws.OPEN) return agent;
    const now = this.o.clock.now();
    const live = new LiveSession(agent, now);
    const previous = this.sessions.add(live);
    this.o.metrics.sessionConnects.inc();
    ws.once('close', () => this.detach(live));
    live.subscribeDeadline = setTimeout(() => {
      if (!live.subscribed && !live.ending)
        closeWithin(ws, CLOSE_CODES.HANDSHAKE_TIMEOUT, 'agent.session not subscribed in time');
    }, this.o.subscribeTimeoutMs ?? 10_000);
    live.subscribeDeadline.unref();
    if (previous) {
      // Two processes with one identity (a cloned host, a leaked identity file): the replaced
      // agent exits 6, told the new session's address. A reconnect that came before the server saw
      // its old socket die lands here too; that agent ignores the close of a socket it left.
      this.endSession(previous, null, CLOSE_CODES.REPLACED, replacedCloseReason(remoteAddress), now);
      this.o.metrics.sessionReplacements.inc();
    }
    this.o.agentSessions.recordConnected(agent, now, previous ? previous.agent.remoteAddress : null);
    return agent;
  }

  /**
   * Checks, for a call over an agent's socket, that its session is still the connector's live one
   * and the connector still usable: a revoke, a delete or a newer session ends what it may do.
   */
  requireLive(agent: AgentSession): void {
    this.o.handshakes.requireUsable(agent.connectorId, agent.jkt);
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
    if (!this.sessions.awaitsAcknowledgement(agent))
      throw new DomainError('IDENTITY_INVALID', 'This session is not waiting for an acknowledgement.');
  }

  /**
   * `agent.acknowledge`: the agent heard its session's final event and wiped its identity. Settles
   * the revoke or delete waiting on it as confirmed, and records and audits the confirmation.
   */
  acknowledgeTermination(agent: AgentSession, event: FinalEvent): void {
    const now = this.o.clock.now();
    if (!this.sessions.acknowledge(agent, event, now))
      throw new DomainError('VALIDATION_FAILED', `This session did not end with a ${event} event.`);
    this.o.connectors.confirmTermination(agent.connectorId, {
      event,
      groupId: agent.groupId,
      at: now,
      from: agent.remoteAddress,
      via: 'acknowledgement',
    });
  }

  /**
   * Records a refused handshake and closes the socket: with the final "refused" code, or with the
   * retry-later code when the refusal is RATE_LIMITED.
   */
  refuse(
    ws: WebSocket,
    reason: ErrorReason,
    remoteAddress: string,
    retryAfterSeconds?: number,
    connectorId: string | null = null,
    /** What the refusal's error said beyond its reason (for the log: which server a proof named). */
    detail: string | null = null,
  ): void {
    this.o.agentSessions.recordRefusal(reason, remoteAddress, connectorId, detail);
    if (reason === 'IDENTITY_UNKNOWN_SIGNER') closeWithin(ws, CLOSE_CODES.SIGNER_UNKNOWN, reason);
    else if (reason !== 'RATE_LIMITED') closeWithin(ws, CLOSE_CODES.REFUSED, reason);
    else if (retryAfterSeconds === undefined) closeWithin(ws, CLOSE_CODES.RATE_LIMITED, reason);
    else closeWithin(ws, CLOSE_CODES.RATE_LIMITED, `${reason} retry-after=${retryAfterSeconds}`);
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
    const record = this.o.handshakes.requireUsable(agent.connectorId, agent.jkt);
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
      await this.renewals
        .renewIfDue(live)
        .catch((error) =>
          this.o.logger.error({ err: error, connectorId: agent.connectorId }, 'identity renewal failed'),
        );
      this.renewals.scheduleRenewal(live);
      for (;;) {
        const event = await live.next(signal);
        if (!event) break;
        yield event;
      }
    } finally {
      // The session is the subscription: a socket that dropped it (or was told to end) goes too, so
      // nothing authenticated stays open outside the hub's reach.
      if (!live.ending) live.end(null, 1000, 'session ended', this.o.clock.now());
      this.sessions.closeEnded(live);
      this.detach(live);
    }
  }

  /** Renews and pushes every scheduled identity that is due now (see IdentityRenewals.renewDue). */
  renewDueIdentities(): Promise<number> {
    return this.renewals.renewDue();
  }

  /**
   * `agent.renew`: a new identity for the session's connector and key, recorded and audited as a
   * pushed one is. Refused (RATE_LIMITED, with retryAfterSeconds) before half the identity's
   * lifetime has passed, or within a minute of a newer identity of the connector (see
   * IdentityRenewals.notBefore); the agent asks later than that, at about a quarter left, when no
   * push came.
   */
  async renewOnRequest(agent: AgentSession): Promise<{ identityToken: string; identityExpiresAt: string }> {
    const live = this.sessionOf(agent);
    if (live.ending) throw new DomainError('IDENTITY_INVALID', SESSION_ENDED);
    this.o.agentSessions.requireRenewalAllowed(agent);
    const wait = this.renewals.notBefore(live) - this.o.clock.now();
    if (wait > 0) {
      const retryAfterSeconds = Math.ceil(wait / 1000);
      throw new DomainError(
        'RATE_LIMITED',
        `A newer identity of this connector was issued moments ago; retry in ${retryAfterSeconds} s.`,
        { retryAfterSeconds },
      );
    }
    const renewed = await this.renewals.renew(live, 'request');
    return { identityToken: renewed.token, identityExpiresAt: new Date(renewed.expiresAt).toISOString() };
  }

  /** Ends every session without a final code (server shutdown): agents reconnect to the next server. */
  closeAll(): void {
    for (const timer of this.timers) clearInterval(timer);
    this.unsubscribe();
    this.sessions.settleAll();
    const now = this.o.clock.now();
    for (const id of this.sessions.connectorIds()) this.o.agentSessions.recordSeen(id, now);
    for (const live of this.sessions.values()) live.agent.ws.close(1001, 'server shutting down');
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
    if (!live.subscribed) this.sessions.closeEnded(live);
    else if (!ended && (event?.type === 'revoked' || event?.type === 'deleted'))
      this.sessions.expectAcknowledgement(live, event.type);
  }

  /**
   * Ends a session another replica's newer session replaced (4009, as a replacement here is), or one
   * the cluster lost track of (1012, not final: the agent reconnects and claims its connector anew).
   */
  private endLostSession(live: LiveSession, replacedBy: string | null): void {
    const now = this.o.clock.now();
    if (replacedBy === null) {
      this.endSession(live, null, SESSION_LOST_CODE, 'session lost by this replica, reconnect', now);
      return;
    }
    this.endSession(live, null, CLOSE_CODES.REPLACED, replacedCloseReason(replacedBy), now);
    this.o.metrics.sessionReplacements.inc();
    this.o.agentSessions.recordReplacedElsewhere(live.agent, replacedBy, now);
  }

  private detach(live: LiveSession): void {
    clearTimeout(live.subscribeDeadline);
    this.renewals.forget(live);
    if (!this.sessions.remove(live)) return;
    const { connectorId } = live.agent;
    this.o.agentSessions.recordSeen(connectorId, this.o.clock.now());
    this.o.logger.debug({ connectorId }, 'agent disconnected');
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
    return { type: 'status', status: this.o.agentSessions.currentStatus(connectorId), scope };
  }
}
