import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Clock } from '../clock.js';
import type { ClusterSessions, LostSession, SessionClaim } from './cluster-sessions.js';
import {
  CLAIM_SQL,
  decodeNotification,
  REAP_SQL,
  RELEASE_ALL_SQL,
  RELEASE_SQL,
  RESYNC_PAGE_SQL,
  type ReapedSession,
  SESSIONS_CHANNEL,
} from './postgres-cluster-sql.js';

export interface PostgresClusterSessionsOptions {
  /** Statements run on the pool; the listener has a connection of its own. */
  pool: pg.Pool;
  connectionString: string;
  clock: Clock;
  /** This replica's URL, as the replicas table shows it. */
  url?: string | null;
  /** @default a random UUID */
  replicaId?: string;
  /** How often this replica says it is alive, looks at the others' and reaps the dead. @default 5000 */
  heartbeatMs?: number;
  /** A replica whose heartbeat is older than this is dead: its sessions count as gone. @default 15000 */
  deadAfterMs?: number;
  /** How often the picture of the other replicas' sessions is read again in full. @default 30000 */
  resyncMs?: number;
  /** Claims (and releases) in one statement, at most. @default 1000 */
  batchSize?: number;
  /** Sessions of a dead replica this replica removed, with the dead replica's last heartbeat. */
  onReaped?: (sessions: ReapedSession[]) => void;
  onError?: (error: Error) => void;
}

/** Another replica's session as this one pictures it. */
interface Elsewhere {
  replicaId: string;
  claim: number;
  remoteAddress: string;
  /** When this replica last heard of it (its clock): a resync drops what it did not confirm. */
  heardAt: number;
}

/** A session of this replica: `claim` is its number in the cluster, null until the claim returns. */
interface Own {
  connectorId: string;
  sessionId: number;
  remoteAddress: string;
  connectedAt: number;
  claim: number | null;
  released: boolean;
}

const RESYNC_PAGE_ROWS = 5000;
const RETRY_MS = 1000;

/**
 * ClusterSessions over PostgreSQL. A claim is an upsert into `agent_sessions` with a number from a
 * sequence (the larger number wins, in the table and in every replica's picture) and a NOTIFY on
 * its channel; claims and releases made in the same turn go out together, one statement for up to
 * `batchSize` of them, so a fleet reconnecting at once costs a few statements, not one per agent.
 * Every replica keeps the other replicas' sessions in memory (notifications, plus a full read every
 * `resyncMs` and after its listener reconnects), so `isConnectedElsewhere` never waits on the database.
 * A replica whose heartbeat is older than `deadAfterMs` counts as dead at once; the first replica to
 * see it removes its rows (and says so through `onReaped`).
 */
export class PostgresClusterSessions implements ClusterSessions {
  readonly replicaId: string;
  /** Statements sent to the database, by kind (tests count them). */
  readonly statements = { claim: 0, release: 0, heartbeat: 0, resync: 0 };
  private readonly mine = new Map<string, Own>();
  private readonly elsewhere = new Map<string, Elsewhere>();
  /** The last sign of life of each other replica (their heartbeat, or a notification we heard). */
  private readonly aliveAt = new Map<string, number>();
  private pendingClaims: Own[] = [];
  private pendingReleases: Own[] = [];
  private flushing: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private listener: pg.Client | undefined;
  private stopped = false;
  private lostHandler: (lost: LostSession) => void = () => {};
  private readonly heartbeatMs: number;
  private readonly deadAfterMs: number;
  private readonly batchSize: number;

  private constructor(private readonly o: PostgresClusterSessionsOptions) {
    this.replicaId = o.replicaId ?? randomUUID();
    this.heartbeatMs = o.heartbeatMs ?? 5000;
    this.deadAfterMs = o.deadAfterMs ?? 15_000;
    this.batchSize = o.batchSize ?? 1000;
  }

  /** Registers the replica, listens, reads the others' sessions, and starts the timers. */
  static async start(options: PostgresClusterSessionsOptions): Promise<PostgresClusterSessions> {
    const cluster = new PostgresClusterSessions(options);
    await cluster.register();
    await cluster.listen();
    await cluster.resync();
    await cluster.heartbeat();
    cluster.every(cluster.heartbeatMs, () => cluster.heartbeat());
    cluster.every(options.resyncMs ?? 30_000, () => cluster.resync());
    return cluster;
  }

  claim(session: SessionClaim): void {
    const own: Own = { ...session, claim: null, released: false };
    this.mine.set(session.connectorId, own);
    this.pendingClaims.push(own);
    this.scheduleFlush();
  }

  release(connectorId: string, sessionId: number): void {
    const own = this.mine.get(connectorId);
    if (own?.sessionId !== sessionId) return; // replaced: the claim is another session's now
    this.mine.delete(connectorId);
    own.released = true;
    // A claim still on its way is released once it has its number.
    if (own.claim !== null) {
      this.pendingReleases.push(own);
      this.scheduleFlush();
    }
  }

  onLost(handler: (lost: LostSession) => void): void {
    this.lostHandler = handler;
  }

  isConnectedElsewhere(connectorId: string): boolean {
    const session = this.elsewhere.get(connectorId);
    return session !== undefined && this.isAlive(session.replicaId);
  }

  /** How many sessions of other live replicas this replica pictures (a full count: for tests and gauges). */
  connectedElsewhere(): number {
    let count = 0;
    for (const session of this.elsewhere.values()) if (this.isAlive(session.replicaId)) count++;
    return count;
  }

  /** Sends what is waiting now; resolves when nothing is (tests, shutdown). Bounded by the queue. */
  async flush(): Promise<void> {
    for (let round = 0; round < 100; round++) {
      if (this.pendingClaims.length > 0 || this.pendingReleases.length > 0) this.scheduleFlush();
      // Nothing in flight: all sent, or a failed statement waits for its retry (see onError).
      if (!this.flushing) return;
      await this.flushing;
    }
  }

  /**
   * Says this replica is alive, reads the others' heartbeats, and removes the sessions of the dead.
   * Finding its own row gone (it was taken for dead while it could not reach the database), it ends
   * its sessions without a final code: their agents may be elsewhere by now, and reconnect if not.
   */
  async heartbeat(): Promise<void> {
    const now = this.o.clock.now();
    try {
      this.statements.heartbeat++;
      const beat = await this.o.pool.query(`UPDATE replicas SET heartbeat_at = $2 WHERE id = $1`, [
        this.replicaId,
        now,
      ]);
      if (beat.rowCount === 0) await this.lostTrack();
      const replicas = await this.o.pool.query<{ id: string; heartbeat_at: string }>(
        `SELECT id, heartbeat_at::text FROM replicas WHERE id <> $1`,
        [this.replicaId],
      );
      const known = new Set<string>();
      for (const row of replicas.rows) {
        known.add(row.id);
        this.heard(row.id, Number(row.heartbeat_at));
      }
      // A replica whose row is gone was reaped (or stopped): its sessions are gone with it.
      for (const id of this.aliveAt.keys()) if (!known.has(id)) this.aliveAt.set(id, 0);
      const reaped = await this.o.pool.query<{
        connector_id: string;
        session_id: string;
        heartbeat_at: string;
      }>(REAP_SQL, [this.replicaId, now - this.deadAfterMs]);
      this.forgetDead();
      if (reaped.rows.length > 0)
        this.o.onReaped?.(
          reaped.rows.map((row) => ({ connectorId: row.connector_id, lastSeenAt: Number(row.heartbeat_at) })),
        );
    } catch (error) {
      this.o.onError?.(error as Error);
    }
  }

  /** Reads every other replica's session again, a page at a time, and drops what it did not confirm. */
  async resync(): Promise<void> {
    const startedAt = this.o.clock.now();
    let after = '';
    try {
      // Bounded: a page per statement, as many pages as the table has rows over the page size, plus one.
      for (let page = 0; page < 10_000; page++) {
        this.statements.resync++;
        const rows = await this.o.pool.query<{
          connector_id: string;
          replica_id: string;
          session_id: string;
          remote_address: string;
        }>(RESYNC_PAGE_SQL, [this.replicaId, after, RESYNC_PAGE_ROWS]);
        const now = this.o.clock.now();
        for (const row of rows.rows)
          this.noteClaim(row.connector_id, row.replica_id, Number(row.session_id), row.remote_address, now);
        if (rows.rows.length < RESYNC_PAGE_ROWS) break;
        after = rows.rows[rows.rows.length - 1]!.connector_id;
      }
    } catch (error) {
      this.o.onError?.(error as Error);
      return;
    }
    for (const [connectorId, session] of this.elsewhere)
      if (session.heardAt < startedAt) this.elsewhere.delete(connectorId);
  }

  /** Stops for good: releases every session of this replica and its row, in one transaction. */
  async stop(): Promise<void> {
    this.halt();
    await this.flushing?.catch(() => {});
    try {
      await this.o.pool.query(RELEASE_ALL_SQL, [this.replicaId]);
      await this.o.pool.query(`DELETE FROM replicas WHERE id = $1`, [this.replicaId]);
    } catch (error) {
      this.o.onError?.(error as Error);
    }
  }

  /** Stops its timers and listener and leaves its rows behind, as a replica that died would (tests). */
  async abandon(): Promise<void> {
    this.halt();
  }

  private halt(): void {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    clearTimeout(this.retryTimer);
    const listener = this.listener;
    this.listener = undefined;
    listener?.end().catch(() => {});
  }

  private every(ms: number, run: () => Promise<void>): void {
    const timer = setInterval(() => void run(), ms);
    timer.unref();
    this.timers.push(timer);
  }

  private async register(): Promise<void> {
    const now = this.o.clock.now();
    await this.o.pool.query(
      `INSERT INTO replicas (id, url, started_at, heartbeat_at) VALUES ($1, $2, $3, $3)
       ON CONFLICT (id) DO UPDATE SET url = excluded.url, heartbeat_at = excluded.heartbeat_at`,
      [this.replicaId, this.o.url ?? null, now],
    );
  }

  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.o.connectionString });
    const lost = (error: Error) => {
      if (this.listener !== client || this.stopped) return;
      this.listener = undefined;
      this.o.onError?.(error);
      client.end().catch(() => {});
      // Back, it reads everything again: notifications sent while it was away are gone.
      const retry = setTimeout(() => {
        this.listen()
          .then(() => this.resync())
          .catch((failed) => lost(failed as Error));
      }, RETRY_MS);
      retry.unref();
    };
    client.on('error', lost);
    client.on('end', () => lost(new Error('cluster listener connection ended')));
    client.on('notification', (message) => {
      if (message.payload) this.onNotification(message.payload);
    });
    await client.connect();
    await client.query(`LISTEN ${SESSIONS_CHANNEL}`);
    this.listener = client;
  }

  private onNotification(payload: string): void {
    const notice = decodeNotification(payload);
    if (!notice || notice.replicaId === this.replicaId) return;
    const now = this.o.clock.now();
    this.heard(notice.replicaId, now);
    if (notice.kind === 'claimed') {
      for (const c of notice.claims)
        this.noteClaim(c.connectorId, notice.replicaId, c.claim, c.remoteAddress, now);
    } else {
      for (const r of notice.releases) {
        if (this.elsewhere.get(r.connectorId)?.claim === r.claim) this.elsewhere.delete(r.connectorId);
      }
    }
  }

  /** Another replica's claim: the larger number wins; one of ours it outnumbers is replaced. */
  private noteClaim(
    connectorId: string,
    replicaId: string,
    claim: number,
    remoteAddress: string,
    now: number,
  ): void {
    const known = this.elsewhere.get(connectorId);
    if (known && known.claim > claim) {
      known.heardAt = now;
      return;
    }
    const own = this.mine.get(connectorId);
    if (own && own.claim !== null && own.claim > claim) return; // ours is newer: that one is ending
    this.elsewhere.set(connectorId, { replicaId, claim, remoteAddress, heardAt: now });
    // A claim of ours still on its way is compared when its number comes back.
    if (own && own.claim !== null) this.replaced(own, remoteAddress);
  }

  private replaced(own: Own, by: string | null): void {
    this.mine.delete(own.connectorId);
    this.lostHandler({ connectorId: own.connectorId, sessionId: own.sessionId, replacedBy: by });
  }

  private heard(replicaId: string, at: number): void {
    this.aliveAt.set(replicaId, Math.max(this.aliveAt.get(replicaId) ?? 0, at));
  }

  private isAlive(replicaId: string): boolean {
    // Not heard of at all yet (its claim came before our first look at the replicas): alive.
    const at = this.aliveAt.get(replicaId);
    return at === undefined || this.o.clock.now() - at <= this.deadAfterMs;
  }

  private forgetDead(): void {
    const dead = new Set<string>();
    for (const [id, at] of this.aliveAt) if (this.o.clock.now() - at > this.deadAfterMs) dead.add(id);
    if (dead.size === 0) return;
    for (const [connectorId, session] of this.elsewhere)
      if (dead.has(session.replicaId)) this.elsewhere.delete(connectorId);
  }

  private async lostTrack(): Promise<void> {
    await this.register();
    await this.o.pool.query(RELEASE_ALL_SQL, [this.replicaId]);
    const sessions = [...this.mine.values()];
    this.mine.clear();
    this.pendingClaims = [];
    this.pendingReleases = [];
    for (const own of sessions)
      this.lostHandler({ connectorId: own.connectorId, sessionId: own.sessionId, replacedBy: null });
  }

  private scheduleFlush(): void {
    if (this.flushing || this.stopped || this.retryTimer) return;
    this.flushing = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.sendPending())
      .catch((error) => {
        this.o.onError?.(error as Error);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.scheduleFlush();
        }, RETRY_MS);
        this.retryTimer.unref();
      })
      .finally(() => {
        this.flushing = null;
      });
  }

  /** Sends the waiting claims, then the waiting releases, a batch per statement, until none wait. */
  private async sendPending(): Promise<void> {
    for (let rounds = 0; rounds < 1000 && !this.stopped; rounds++) {
      if (this.pendingClaims.length > 0) await this.sendClaims(this.pendingClaims.splice(0, this.batchSize));
      else if (this.pendingReleases.length > 0)
        await this.sendReleases(this.pendingReleases.splice(0, this.batchSize));
      else return;
    }
  }

  private async sendClaims(batch: Own[]): Promise<void> {
    // The newest session of a connector in the batch is the one claimed: an older one was replaced
    // here already (and an upsert may not touch a row twice in one statement).
    const newest = new Map<string, Own>();
    for (const own of batch) newest.set(own.connectorId, own);
    const claims = [...newest.values()];
    this.statements.claim++;
    let result: pg.QueryResult<{ ord: string; session_id: string }>;
    try {
      result = await this.o.pool.query(CLAIM_SQL, [
        this.replicaId,
        claims.map((c) => c.connectorId),
        claims.map((c) => c.remoteAddress),
        claims.map((c) => c.connectedAt),
      ]);
    } catch (error) {
      this.pendingClaims.unshift(...claims);
      throw error;
    }
    for (const row of result.rows) {
      const own = claims[Number(row.ord) - 1]!;
      own.claim = Number(row.session_id);
      if (own.released) {
        this.pendingReleases.push(own);
        continue;
      }
      const other = this.elsewhere.get(own.connectorId);
      if (other && other.claim > own.claim) this.replaced(own, other.remoteAddress);
      else if (other) this.elsewhere.delete(own.connectorId); // ours replaced it: that one is ending
    }
  }

  private async sendReleases(batch: Own[]): Promise<void> {
    this.statements.release++;
    try {
      await this.o.pool.query(RELEASE_SQL, [
        this.replicaId,
        batch.map((own) => own.connectorId),
        batch.map((own) => own.claim),
      ]);
    } catch (error) {
      this.pendingReleases.unshift(...batch);
      throw error;
    }
  }
}
