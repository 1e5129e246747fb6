import type { Clock } from '../clock.js';
import type { LostSession, SessionClaim } from './cluster-sessions.js';
import { CUT_OFF_MARGIN_MS } from './cut-off.js';

/**
 * The other replicas' sessions a picture holds at most from notifications alone (see
 * `ClusterPicture`'s maxRemote): ~150 bytes each, so ~150 MB, for a cluster of far more agents than
 * its replicas' open-file caps together allow.
 */
export const MAX_REMOTE_SESSIONS = 1_000_000;

/** Claim numbers are summed modulo this, in the table's summary and the picture's alike: exact in a double. */
export const CLAIM_SUM_MODULUS = 2 ** 32;

/**
 * How much earlier (by the database's clock as the two replicas follow it) another replica's session
 * must have connected than an own one for its larger claim to count as late rather than newer: their
 * readings of it may differ by this much (the bound the cut-off margin assumes).
 */
export const OLDER_SESSION_MARGIN_MS = CUT_OFF_MARGIN_MS;

/** A session of this replica: `claim` is its number in the cluster, null until its claim returns. */
export interface OwnSession extends SessionClaim {
  claim: number | null;
  released: boolean;
}

/** Another replica's session as this one pictures it. */
interface RemoteSession {
  replicaId: string;
  claim: number;
  remoteAddress: string;
  /** When it connected, by the database's clock as its replica follows it, as the table has it (null: only heard of). */
  connectedAt: number | null;
  /**
   * When this replica last heard of it, as a count of what it heard (see `readMark`): a full read
   * drops what it did not confirm. Not a time: the database's clock as a replica follows it steps
   * back a little at a reading, and a session read after such a step looked heard before the read.
   */
  heardAt: number;
  /**
   * Read from the table (a full read, or a claim checked there), not only heard of: a notification
   * can come from any role that may connect to the database, so only a confirmed claim ends a session.
   */
  confirmed: boolean;
}

/**
 * What one replica knows of the cluster's sessions, in memory: its own (with their claim numbers),
 * the other replicas' (from their notifications and full reads), and when each other replica last
 * showed a sign of life. The rule throughout: of two claims of one connector, the larger number
 * wins; an own session outnumbered is lost (handed to `lost`). No I/O here.
 */
export class ClusterPicture {
  private readonly own = new Map<string, OwnSession>();
  private readonly remote = new Map<string, RemoteSession>();
  private readonly aliveAt = new Map<string, number>();

  /** Heard claims of connectors it knew nothing of, not kept because the picture was full. */
  unheard = 0;
  /** Counts what it heard of other replicas' sessions, in order (see RemoteSession.heardAt). */
  private hearings = 0;

  constructor(
    private readonly clock: Clock,
    private readonly deadAfterMs: number,
    private readonly lost: (lost: LostSession) => void,
    /** Asked to check a heard claim that would end an own session in the table (answered with claimed or refuted). */
    private readonly verify: (connectorId: string) => void = () => {},
    /**
     * How many other replicas' sessions it holds before a claim it only heard of, for a connector it
     * knows nothing of, is not kept. Any role that may connect to the database can notify, so a
     * flood of made-up claims would otherwise grow this map until the next full read (within
     * 30 s) drops them. What the table confirms is always kept; a claim not kept is read at that
     * full read (the summary no longer matches), so a real fleet past the bound shows presence late.
     */
    private readonly maxRemote: number = MAX_REMOTE_SESSIONS,
  ) {}

  /** Adds a session admitted here; answers it, to be claimed. */
  admitted(claim: SessionClaim): OwnSession {
    const session: OwnSession = { ...claim, claim: null, released: false };
    this.own.set(claim.connectorId, session);
    return session;
  }

  /** Removes an own session that ended; undefined when it is not the connector's own session any more. */
  ended(connectorId: string, sessionId: number): OwnSession | undefined {
    const session = this.own.get(connectorId);
    if (session?.sessionId !== sessionId) return undefined;
    this.own.delete(connectorId);
    session.released = true;
    return session;
  }

  /** An own session's claim came back with its number: it loses to a larger one already heard of. */
  numbered(session: OwnSession, claim: number): void {
    session.claim = claim;
    if (session.released) return;
    const other = this.remote.get(session.connectorId);
    if (other && other.claim > claim) {
      if (other.confirmed) this.replace(session, other);
      else this.verify(session.connectorId);
    } else if (other) this.remote.delete(session.connectorId); // ours replaced it: that one is ending
  }

  /** Another replica's claim as the table has it (a full read, or a heard claim checked there). */
  claimed(
    connectorId: string,
    replicaId: string,
    claim: number,
    remoteAddress: string,
    connectedAt: number | null = null,
  ): void {
    const mine = this.remember(connectorId, replicaId, claim, remoteAddress, true, connectedAt);
    // A claim of ours still on its way is compared when its number comes back (`numbered`).
    if (mine) this.replace(mine, { remoteAddress, connectedAt });
  }

  /**
   * Another replica's claim as a notification tells it: enough for presence, not to end an own
   * session, which waits for the table to confirm it (`verify`).
   */
  heardClaim(connectorId: string, replicaId: string, claim: number, remoteAddress: string): void {
    if (this.remember(connectorId, replicaId, claim, remoteAddress, false, null)) this.verify(connectorId);
  }

  /** The table does not have a heard claim of `connectorId` above ours: it was not a replica's. */
  refuted(connectorId: string): void {
    const heard = this.remote.get(connectorId);
    if (heard && !heard.confirmed) this.remote.delete(connectorId);
  }

  /** Another replica's release: gone, unless a newer claim of the connector came since. */
  released(connectorId: string, claim: number): void {
    if (this.remote.get(connectorId)?.claim === claim) this.remote.delete(connectorId);
  }

  /** A sign of life of another replica at `at` (its heartbeat, or now for a notification). */
  heard(replicaId: string, at: number): void {
    this.aliveAt.set(replicaId, Math.max(this.aliveAt.get(replicaId) ?? 0, at));
  }

  /** The replicas the table lists now (besides this one): any other is gone, with its sessions. */
  replicasListed(ids: ReadonlySet<string>): void {
    for (const id of this.aliveAt.keys()) if (!ids.has(id)) this.aliveAt.set(id, 0);
    const dead = new Set<string>();
    for (const id of this.aliveAt.keys()) if (!this.isAlive(id)) dead.add(id);
    if (dead.size === 0) return;
    for (const [connectorId, session] of this.remote)
      if (dead.has(session.replicaId)) this.remote.delete(connectorId);
    // Forgotten once gone from the table: ids only ever heard of (a notification can name any) would
    // otherwise pile up here for as long as the process runs.
    for (const id of dead) if (!ids.has(id)) this.aliveAt.delete(id);
  }

  /** Marks the start of a full read, for `confirmedSince`. */
  readMark(): number {
    return ++this.hearings;
  }

  /** After a full read begun at `mark` (readMark): drops remote sessions it did not see or hear of since. */
  confirmedSince(mark: number): void {
    for (const [connectorId, session] of this.remote)
      if (session.heardAt < mark) this.remote.delete(connectorId);
  }

  isConnectedElsewhere(connectorId: string): boolean {
    return this.holderElsewhere(connectorId) !== null;
  }

  /** The live replica that holds the connector's session, when another one does. */
  holderElsewhere(connectorId: string): string | null {
    const session = this.remote.get(connectorId);
    return session !== undefined && this.isAlive(session.replicaId) ? session.replicaId : null;
  }

  /** Whether the connector's session is one of this replica's. */
  holdsOwn(connectorId: string): boolean {
    return this.own.has(connectorId);
  }

  /** How many other replicas it keeps a sign of life of (bounded by the table's, between listings). */
  get trackedReplicas(): number {
    return this.aliveAt.size;
  }

  /** Sessions of other live replicas (a full count). */
  connectedElsewhere(): number {
    let count = 0;
    for (const session of this.remote.values()) if (this.isAlive(session.replicaId)) count++;
    return count;
  }

  /**
   * Every other replica's session it holds (live or not), as the table's summary reads them: their
   * count and the sum of their claim numbers modulo 2^32 (see `CLAIM_SUM_MODULUS`).
   */
  remoteSummary(): { count: number; claimSum: number } {
    let claimSum = 0;
    for (const session of this.remote.values()) claimSum = (claimSum + session.claim) % CLAIM_SUM_MODULUS;
    return { count: this.remote.size, claimSum };
  }

  /** This replica was taken for dead: every own session is lost, without a replacing address. */
  loseAllOwn(): number {
    const sessions = [...this.own.values()];
    this.own.clear();
    for (const session of sessions) this.lost({ ...identify(session), replacedBy: null });
    return sessions.length;
  }

  private isAlive(replicaId: string): boolean {
    // Not heard of yet (its claim came before our first look at the replicas): alive.
    const at = this.aliveAt.get(replicaId);
    return at === undefined || this.clock.now() - at <= this.deadAfterMs;
  }

  /** Records a claim unless a larger one is known; answers the own numbered session it outnumbers. */
  private remember(
    connectorId: string,
    replicaId: string,
    claim: number,
    remoteAddress: string,
    confirmed: boolean,
    connectedAt: number | null,
  ): OwnSession | undefined {
    const heardAt = ++this.hearings;
    const known = this.remote.get(connectorId);
    if (known && known.claim > claim) {
      known.heardAt = heardAt;
      return undefined;
    }
    const mine = this.own.get(connectorId);
    if (mine && mine.claim !== null && mine.claim > claim) return undefined; // ours is newer: that one is ending
    if (!known && !mine && !confirmed && this.remote.size >= this.maxRemote) {
      this.unheard++;
      return undefined;
    }
    // The same claim heard after a read confirmed it stays confirmed.
    const same = known?.claim === claim && known.replicaId === replicaId && known.confirmed;
    this.remote.set(connectorId, {
      replicaId,
      claim,
      remoteAddress,
      connectedAt: connectedAt ?? (same ? known.connectedAt : null),
      heardAt,
      confirmed: confirmed || same,
    });
    return mine && mine.claim !== null ? mine : undefined;
  }

  /**
   * Ends an own session another replica's larger claim outnumbered. A claim's number is drawn when
   * its statement runs, which may be long after its session connected (a replica whose network or
   * pool held the statement back): a session that connected well before ours is then the agent's
   * old one, not a newer one, and 4009 would stop the agent for good. It is told to reconnect
   * instead (1012): its new claim then outnumbers the late one, whose session ends.
   */
  private replace(session: OwnSession, by: { remoteAddress: string; connectedAt: number | null }): void {
    this.own.delete(session.connectorId);
    const late = by.connectedAt !== null && by.connectedAt < session.connectedAt - OLDER_SESSION_MARGIN_MS;
    this.lost({ ...identify(session), replacedBy: late ? null : by.remoteAddress });
  }
}

function identify(session: OwnSession): { connectorId: string; sessionId: number } {
  return { connectorId: session.connectorId, sessionId: session.sessionId };
}
