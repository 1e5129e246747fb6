import { DomainError } from '../../shared/errors.js';
import { CLOSE_CODES, TERMINATION_ACK_TIMEOUT_MS } from '../../shared/protocol.js';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { Presence } from '../services/deps.js';
import type { Termination } from '../services/views.js';
import { type ClusterSessions, type LostSession, singleProcess } from './cluster-sessions.js';
import type { AgentSession, LiveSession } from './live-session.js';
import { RemoteTerminationReceipts } from './remote-termination-receipts.js';
import { SessionsPerAddress } from './sessions-per-address.js';
import { type FinalEvent, TerminationReceipts } from './termination-receipts.js';

export interface SessionRegistryOptions {
  clock: Clock;
  metrics: Metrics;
  /** Live sessions allowed from one source address (NAT'd fleets share one). @default Infinity */
  maxSessionsPerAddress?: number | undefined;
  /** The other replicas' sessions (one per connector across them). @default singleProcess */
  cluster?: ClusterSessions | undefined;
  /**
   * How long a revoke or delete waits for the agent's acknowledgement (tests on a loaded machine
   * give real agent processes longer). @default TERMINATION_ACK_TIMEOUT_MS (750)
   */
  terminationAckTimeoutMs?: number | undefined;
}

/**
 * The live sessions, one per connector, with what hangs on them: how many each address holds, and
 * the receipts of sessions a revoke or delete ended. It depends on no service, so the services can
 * be given it (as their `Presence`) before the session hub that fills it is built.
 */
export class SessionRegistry implements Presence {
  private readonly sessions = new Map<string, LiveSession>();
  private readonly perAddress: SessionsPerAddress;
  /** Sessions a revoke or delete ended, open until their agent acknowledges or the bound passes. */
  private readonly receipts: TerminationReceipts;
  /** Revokes and deletes made here of sessions on other replicas, waiting for their confirmation (same bound). */
  private readonly remoteReceipts: RemoteTerminationReceipts;

  private readonly cluster: ClusterSessions;
  private lastSessionId = 0;
  private endLost: (live: LiveSession, replacedBy: string | null) => void = () => {};
  private presenceListener: (connectorId: string) => void = () => {};

  constructor(private readonly o: SessionRegistryOptions) {
    const ackTimeoutMs = o.terminationAckTimeoutMs ?? TERMINATION_ACK_TIMEOUT_MS;
    this.receipts = new TerminationReceipts({
      timeoutMs: ackTimeoutMs,
      // Confirmed: closed once the answer to agent.acknowledge has gone out.
      onSettled: (live, termination) =>
        termination.state === 'confirmed' ? setImmediate(() => this.closeEnded(live)) : this.closeEnded(live),
    });
    this.remoteReceipts = new RemoteTerminationReceipts(ackTimeoutMs);
    this.perAddress = new SessionsPerAddress(o.maxSessionsPerAddress ?? Number.POSITIVE_INFINITY);
    this.cluster = o.cluster ?? singleProcess;
    this.cluster.onLost((lost) => this.lost(lost));
    this.cluster.onDeletionConfirmedElsewhere({
      awaits: (connectorId) => this.remoteReceipts.isExpecting(connectorId),
      confirmed: ({ connectorId, confirmedAt, confirmedFrom }) =>
        this.remoteReceipts.confirmed(connectorId, {
          state: 'confirmed',
          confirmedAt: new Date(confirmedAt).toISOString(),
          confirmedFrom,
        }),
    });
    this.cluster.onPresenceElsewhere((connectorIds) => {
      for (const id of connectorIds) this.presenceListener(id);
    });
  }

  /**
   * Sets who is told of each connector whose session started or ended, here or on another replica
   * (the console's live feed). One listener; it must be cheap: a reconnecting fleet calls it per agent.
   */
  onPresenceChange(listener: (connectorId: string) => void): void {
    this.presenceListener = listener;
  }

  holdsHere(connectorId: string): boolean {
    return this.sessions.has(connectorId);
  }

  /** Connected here or on another live replica. */
  isConnected(connectorId: string): boolean {
    return this.sessions.has(connectorId) || this.cluster.isConnectedElsewhere(connectorId);
  }

  replicaOf(connectorId: string): string | null {
    return this.cluster.holderOf(connectorId);
  }

  /**
   * Sets who ends a session of this replica that a newer one on another replica replaced
   * (`replacedBy`: its address), or that the cluster lost track of (null); the session hub.
   */
  onLostElsewhere(end: (live: LiveSession, replacedBy: string | null) => void): void {
    this.endLost = end;
  }

  private lost({ connectorId, sessionId, replacedBy }: LostSession): void {
    const live = this.sessions.get(connectorId);
    if (live?.sessionId === sessionId) this.endLost(live, replacedBy);
  }

  /**
   * What became of the session a revoke or delete of this connector just ended (see
   * TerminationReceipts). Given the write that records the revoke (`committed`), a session on
   * another replica is waited for too (see RemoteTerminationReceipts).
   */
  termination(connectorId: string, committed?: Promise<unknown>): Promise<Termination> {
    if (
      this.receipts.isExpecting(connectorId) ||
      !committed ||
      !this.cluster.isConnectedElsewhere(connectorId)
    )
      return this.receipts.outcome(connectorId);
    return this.remoteReceipts.expect(connectorId, committed);
  }

  /** The host of `connectorId`, connected here, confirmed its deletion: the other replicas hear it. */
  deletionConfirmed(connectorId: string, at: number, from: string): void {
    this.cluster.deletionConfirmed({ connectorId, confirmedAt: at, confirmedFrom: from });
  }

  /** Another replica recorded that the host of `connectorId` confirmed its revocation. */
  confirmedElsewhere(connectorId: string, termination: Termination): void {
    this.remoteReceipts.confirmed(connectorId, termination);
  }

  get size(): number {
    return this.sessions.size;
  }

  get(connectorId: string): LiveSession | undefined {
    return this.sessions.get(connectorId);
  }

  /** The connector ids with a live session. */
  connectorIds(): IterableIterator<string> {
    return this.sessions.keys();
  }

  values(): IterableIterator<LiveSession> {
    return this.sessions.values();
  }

  /** Whether `live` is still its connector's session and not ending. */
  isCurrent(live: LiveSession): boolean {
    return this.sessions.get(live.agent.connectorId) === live && !live.ending;
  }

  /**
   * Refuses a new session from an address that already has its share, unless it replaces this
   * connector's own session from there. Handshakes in flight are not counted, so a burst may pass
   * the limit by the number of handshakes verified at once.
   */
  requireRoomFor(connectorId: string, remoteAddress: string): void {
    if (this.perAddress.hasRoom(remoteAddress)) return;
    if (this.sessions.get(connectorId)?.agent.remoteAddress === remoteAddress) return;
    throw new DomainError('RATE_LIMITED', `Too many live sessions from ${remoteAddress}.`);
  }

  /** Makes `live` its connector's session; answers the one it replaces, which the caller ends. */
  add(live: LiveSession): LiveSession | undefined {
    const { connectorId, remoteAddress } = live.agent;
    const previous = this.sessions.get(connectorId);
    live.sessionId = ++this.lastSessionId;
    this.sessions.set(connectorId, live);
    this.cluster.claim({
      connectorId,
      sessionId: live.sessionId,
      remoteAddress,
      connectedAt: live.connectedAt,
    });
    this.perAddress.add(remoteAddress);
    if (previous) this.perAddress.remove(previous.agent.remoteAddress);
    this.o.metrics.sessions.set(this.sessions.size);
    this.presenceListener(connectorId);
    return previous;
  }

  /** Removes `live` if it is still its connector's session; false if another replaced it. */
  remove(live: LiveSession): boolean {
    const { connectorId, remoteAddress } = live.agent;
    if (this.sessions.get(connectorId) !== live) return false;
    this.sessions.delete(connectorId);
    this.cluster.release(connectorId, live.sessionId);
    this.perAddress.remove(remoteAddress);
    this.o.metrics.sessions.set(this.sessions.size);
    this.presenceListener(connectorId);
    return true;
  }

  /** Keeps an ended session open for its agent's acknowledgement of `event` (up to the bound). */
  expectAcknowledgement(live: LiveSession, event: FinalEvent): void {
    this.receipts.expect(live, event);
  }

  /** Whether `agent` is a session a revoke or delete ended that owes its acknowledgement. */
  awaitsAcknowledgement(agent: AgentSession): boolean {
    return this.receipts.awaitsAcknowledgement(agent);
  }

  /** Settles `agent`'s receipt as confirmed; false if it waits for none, or for another event. */
  acknowledge(agent: AgentSession, event: FinalEvent, at: number): boolean {
    return this.receipts.acknowledge(agent, event, at);
  }

  /** Settles every receipt as pending (server shutdown). */
  settleAll(): void {
    this.receipts.settleAll();
    this.remoteReceipts.settleAll();
  }

  /**
   * Closes an ended session's socket with its code (unless it still waits for its acknowledgement),
   * and cuts off a peer that does not answer.
   */
  closeEnded(live: LiveSession): void {
    const { ws } = live.agent;
    if (!live.ending || ws.readyState !== ws.OPEN || this.receipts.isWaiting(live)) return;
    const { code, reason, requestedAt } = live.ending;
    // The histogram is of revokes and deletes: an agent's own stop, a replaced or lost session is not one.
    if (code === CLOSE_CODES.REVOKED || code === CLOSE_CODES.DELETED)
      ws.once('close', () =>
        this.o.metrics.revokeCloseSeconds.observe((this.o.clock.now() - requestedAt) / 1000),
      );
    ws.close(code, reason);
    setTimeout(() => ws.terminate(), 2000).unref();
  }
}
