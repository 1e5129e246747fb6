import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Clock } from '../clock.js';
import type { ReplicaDirectory, ReplicaProcess, ReplicaRecord } from '../services/replicas.js';
import { boundedRead } from '../store/postgres/connect.js';
import { ClusterNotifications } from './cluster-notifications.js';
import { ClusterPicture } from './cluster-picture.js';
import type {
  ClusterSessions,
  DeletionConfirmation,
  DeletionConfirmationListener,
  LostSession,
  SessionClaim,
} from './cluster-sessions.js';
import { CutOffWatch, type WhenCutOff } from './cut-off.js';
import { DATABASE_NOW_SQL, type DatabaseClock } from './database-clock.js';
import { PictureCheck } from './picture-check.js';
import type { PostgresClusterSessionsOptions } from './postgres-cluster-options.js';
import {
  CONFIRMATION_RETENTION_MS,
  REAP_SQL,
  RELEASE_ALL_SQL,
  REPLICAS_SQL,
  type ReapedSession,
  type ReplicaRow,
  replicaRecordOf,
} from './postgres-cluster-sql.js';
import { SessionOutbox } from './session-outbox.js';

export type { PostgresClusterSessionsOptions } from './postgres-cluster-options.js';

const RETRY_MS = 1000;

/**
 * ClusterSessions over PostgreSQL. A claim is an upsert into `agent_sessions` with a number from a
 * sequence (the larger number wins, in the table and in every replica's picture) and a NOTIFY on
 * its channel; claims and releases made within `lingerMs` of each other go out together (SessionOutbox),
 * so a fleet reconnecting at once costs a few statements, not one per agent.
 * Every replica keeps the other replicas' sessions in memory (notifications, a full read after its
 * listener reconnects, and a check every `resyncMs`), so `isConnectedElsewhere` never waits on the database.
 * A replica whose heartbeat is older than `deadAfterMs` counts as dead at once; the first replica to
 * see it removes its rows (and says so through `onReaped`).
 */
export class PostgresClusterSessions implements ClusterSessions, ReplicaDirectory {
  readonly backend = 'postgres';
  /** When this replica last told the database it is alive (its wall clock; 0: never). Readiness reads it. */
  lastHeartbeatAt = 0;
  /**
   * Since when its heartbeats have all gone through (the shared time: a wall clock stepped forward
   * as it comes back must not shorten the wait), null while they fail. It reaps
   * another replica only after beating for `deadAfterMs` itself: the others' heartbeats failed
   * through the same database outage, and this one, back first, must not take them for dead and
   * send their whole fleet to it.
   */
  private beatingSince: number | null = null;
  readonly replicaId: string;
  /** Statements sent to the database, by kind (tests count them). */
  readonly statements = {
    claim: 0,
    release: 0,
    heartbeat: 0,
    resync: 0,
    summary: 0,
    confirmation: 0,
    confirmationRead: 0,
    verify: 0,
  };
  /** Live replicas as the last heartbeat read the table, itself included once its own beat went in. */
  private live = 0;
  private url: string | null;
  /** When it first registered: kept when it registers again after losing its row. */
  private startedAt: number | null = null;
  private readonly picture: ClusterPicture;
  /** The time the replicas share (see the databaseClock option). */
  private readonly time: Clock;
  private readonly outbox: SessionOutbox;
  private readonly pictureCheck: PictureCheck;
  private readonly timers: NodeJS.Timeout[] = [];
  private lostHandler: (lost: LostSession) => void = () => {};
  private readonly notifications: ClusterNotifications;
  /** Ends the sessions of a replica that has been silent too long (when --when-cut-off says so). */
  readonly cutOff: CutOffWatch;
  private readonly heartbeatMs: number;
  /** See the heartbeatPool option. */
  private readonly beatPool: pg.Pool;
  readonly deadAfterMs: number;
  /** Told of the sessions of a dead replica this replica removed (see the option). */
  onReaped: ((sessions: ReapedSession[]) => void) | undefined;
  /** Told when it ended its sessions, cut off (see the option). */
  onCutOff: ((sessions: number, silentMs: number) => void) | undefined;
  /** With keep-sessions: told at the same point that it kept them (see CutOffWatch's onKept). */
  onCutOffKept: ((silentMs: number) => void) | undefined;

  private constructor(private readonly o: PostgresClusterSessionsOptions) {
    this.replicaId = o.replicaId ?? randomUUID();
    this.heartbeatMs = o.heartbeatMs ?? 5000;
    this.beatPool = o.heartbeatPool ?? o.pool;
    this.deadAfterMs = o.deadAfterMs ?? 15_000;
    this.onReaped = o.onReaped;
    this.onCutOff = o.onCutOff;
    this.url = o.url ?? null;
    this.time = o.databaseClock ?? o.clock;
    this.picture = new ClusterPicture(
      this.time,
      this.deadAfterMs,
      (lost) => this.lostHandler(lost),
      (connectorId) => this.notifications.verifyClaim(connectorId),
    );
    this.notifications = new ClusterNotifications({
      pool: o.pool,
      connectionString: o.connectionString,
      clock: this.time,
      replicaId: this.replicaId,
      picture: this.picture,
      statements: this.statements,
      resync: () => this.resync(),
      onError: o.onError,
      onMalformed: o.onMalformed,
    });
    this.cutOff = new CutOffWatch({
      whenCutOff: o.whenCutOff ?? 'end-sessions',
      deadAfterMs: this.deadAfterMs,
      monotonic: o.monotonic,
      endSessions: () => this.dropOwnSessions(),
      onEnded: (sessions, silentMs) => this.onCutOff?.(sessions, silentMs),
      onKept: (silentMs) => this.onCutOffKept?.(silentMs),
    });
    this.pictureCheck = new PictureCheck({
      pool: o.pool,
      replicaId: this.replicaId,
      picture: this.picture,
      statements: this.statements,
      onError: o.onError,
    });
    this.outbox = new SessionOutbox({
      pool: o.pool,
      replicaId: this.replicaId,
      picture: this.picture,
      batchSize: o.batchSize ?? 1000,
      lingerMs: o.lingerMs ?? 50,
      retryMs: RETRY_MS,
      statements: this.statements,
      onError: o.onError,
    });
  }

  /** Registers the replica, listens, reads the others' sessions, and starts the timers. */
  static async start(options: PostgresClusterSessionsOptions): Promise<PostgresClusterSessions> {
    const cluster = new PostgresClusterSessions(options);
    // Its first heartbeat is dated by the database's clock too: a host far behind would look dead.
    await cluster.readDatabaseClock();
    await cluster.register();
    await cluster.notifications.listen();
    await cluster.resync();
    await cluster.heartbeat();
    cluster.every(cluster.heartbeatMs, () => cluster.heartbeat());
    cluster.every(options.resyncMs ?? 30_000, () => cluster.check());
    // Sooner than a heartbeat: a silence is noticed within a second of passing the bound.
    cluster.every(Math.min(cluster.heartbeatMs, 1000), async () => cluster.cutOff.check());
    return cluster;
  }

  claim(session: SessionClaim): void {
    // Dated as the other replicas date theirs: a late claim is told from a newer one by it.
    const connectedAt = session.connectedAt + this.time.now() - this.o.clock.now();
    const own = this.picture.admitted({ ...session, connectedAt });
    // Cut off, it holds no session: one whose handshake was under way when it ended the others
    // ends too, at the next turn (not inside the admission that claims it).
    if (this.cutOff.endedSessions) setImmediate(() => this.cutOff.endedSessions && this.dropOwnSessions());
    else this.outbox.claim(own);
  }

  release(connectorId: string, sessionId: number): void {
    // Not found: replaced, and the claim is another session's now.
    const own = this.picture.ended(connectorId, sessionId);
    // A claim still on its way is released once it has its number.
    if (own && own.claim !== null) this.outbox.release(own);
  }

  /** Sent with the claims and releases (the same linger): after them, so a waiter sees the session gone too. */
  deletionConfirmed(confirmation: DeletionConfirmation): void {
    this.outbox.deletionConfirmed(confirmation);
  }

  onDeletionConfirmedElsewhere(listener: DeletionConfirmationListener): void {
    this.notifications.onDeletionConfirmed(listener);
  }

  onLost(handler: (lost: LostSession) => void): void {
    this.lostHandler = handler;
  }

  onPresenceElsewhere(handler: (connectorIds: string[]) => void): void {
    this.notifications.onPresence(handler);
  }

  isConnectedElsewhere(connectorId: string): boolean {
    return this.picture.isConnectedElsewhere(connectorId);
  }

  holderOf(connectorId: string): string | null {
    return this.picture.holdsOwn(connectorId) ? this.replicaId : this.picture.holderElsewhere(connectorId);
  }

  get selfId(): string {
    return this.replicaId;
  }

  /** The time heartbeats are dated by (the database's clock, as this replica follows it). */
  now(): number {
    return this.time.now();
  }

  /** Records the URL the server listens on, unless it was given one (--public-url) to show instead. */
  async listening(url: string): Promise<void> {
    if (this.o.url) return;
    this.url = url;
    await this.o.pool.query(`UPDATE replicas SET url = $2 WHERE id = $1`, [this.replicaId, url]);
  }

  liveCount(): number {
    return this.live;
  }

  /** Every replica in the table, live or not yet reaped, with its sessions. */
  async list(): Promise<ReplicaRecord[]> {
    const { rows } = await boundedRead<ReplicaRow>(this.o.pool, 'The list of replicas', REPLICAS_SQL);
    return rows.map(replicaRecordOf);
  }

  /** How many sessions of other live replicas this replica pictures (a full count: for tests and gauges). */
  connectedElsewhere(): number {
    return this.picture.connectedElsewhere();
  }

  /** Sends what is waiting now; resolves when nothing is (tests, shutdown). Bounded by the queue. */
  flush(): Promise<void> {
    return this.outbox.flush();
  }

  /**
   * Says this replica is alive, reads the others' heartbeats, and removes the sessions of the dead.
   * Finding its own row gone (it was taken for dead while it could not reach the database), it ends
   * its sessions without a final code: their agents may be elsewhere by now, and reconnect if not.
   */
  async heartbeat(): Promise<void> {
    const now = this.o.clock.now();
    const sentAt = this.cutOff.sending();
    try {
      this.statements.heartbeat++;
      const askedAt = this.o.databaseClock?.asking();
      const beat = await this.beatPool.query<{ beaten: number; database_now: number }>(
        `WITH beat AS (UPDATE replicas SET heartbeat_at = $2, problems = $3 WHERE id = $1 RETURNING 1)
         SELECT (SELECT count(*) FROM beat)::int AS beaten, ${DATABASE_NOW_SQL} AS database_now`,
        [this.replicaId, this.time.now(), this.o.problems?.() ?? []],
      );
      if (askedAt !== undefined) this.o.databaseClock?.read(beat.rows[0]!.database_now, askedAt);
      if (beat.rows[0]!.beaten === 0) await this.lostTrack();
      else {
        // Back after ending its sessions: the claims that went out before are released first, while
        // it is still not ready (no new session is claimed in between).
        if (this.cutOff.endedSessions) await this.outbox.releaseAll();
        this.lastHeartbeatAt = now;
      }
      this.cutOff.wentThrough(sentAt);
      this.cutOff.back();
      this.beatingSince ??= this.time.now();
      const replicas = await this.beatPool.query<{ id: string; heartbeat_at: string }>(
        `SELECT id, heartbeat_at::text FROM replicas WHERE id <> $1`,
        [this.replicaId],
      );
      const known = new Set<string>();
      let live = this.lastHeartbeatAt === now ? 1 : 0;
      const shared = this.time.now();
      for (const row of replicas.rows) {
        known.add(row.id);
        this.picture.heard(row.id, Number(row.heartbeat_at));
        if (Number(row.heartbeat_at) >= shared - this.deadAfterMs) live++;
      }
      this.live = live;
      // A replica whose row is gone was reaped (or stopped): its sessions are gone with it.
      this.picture.replicasListed(known);
      if (shared - this.beatingSince < this.deadAfterMs) return;
      const reaped = await this.beatPool.query<{
        connector_id: string;
        session_id: string;
        heartbeat_at: string;
      }>(REAP_SQL, [this.replicaId, shared - this.deadAfterMs, shared - CONFIRMATION_RETENTION_MS]);
      if (reaped.rows.length > 0) {
        // Heartbeats are in the shared time; a connector's last seen is dated by this host's clock.
        const toWall = this.o.clock.now() - this.time.now();
        this.onReaped?.(
          reaped.rows.map((row) => ({
            connectorId: row.connector_id,
            lastSeenAt: Number(row.heartbeat_at) + toWall,
          })),
        );
      }
    } catch (error) {
      this.beatingSince = null;
      this.o.onError?.(error as Error);
    }
  }

  /** The periodic look at the other replicas' sessions (see PictureCheck). */
  check(): Promise<void> {
    return this.pictureCheck.check();
  }

  /** Reads every other replica's session again (see PictureCheck). */
  resync(): Promise<void> {
    return this.pictureCheck.resync();
  }

  /** Stops for good: releases every session of this replica, then deletes its row. */
  async stop(): Promise<void> {
    await this.halt();
    try {
      await this.o.pool.query(RELEASE_ALL_SQL, [this.replicaId]);
      await this.o.pool.query(`DELETE FROM replicas WHERE id = $1`, [this.replicaId]);
    } catch (error) {
      this.o.onError?.(error as Error);
    }
  }

  /** Stops its timers and listener and leaves its rows behind, as a replica that died would (tests). */
  async abandon(): Promise<void> {
    await this.halt();
  }

  private async halt(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.notifications.stop();
    await this.outbox.halt();
  }

  private every(ms: number, run: () => Promise<void>): void {
    const timer = setInterval(() => void run(), ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** Reads the database's clock into the databaseClock option's, when given. */
  private async readDatabaseClock(): Promise<void> {
    const clock = this.o.databaseClock;
    if (!clock) return;
    const askedAt = clock.asking();
    const { rows } = await this.beatPool.query<{ database_now: number }>(
      `SELECT ${DATABASE_NOW_SQL} AS database_now`,
    );
    clock.read(rows[0]!.database_now, askedAt);
  }

  private async register(): Promise<void> {
    const now = this.time.now();
    this.startedAt ??= now;
    const p = this.o.process;
    await this.beatPool.query(
      `INSERT INTO replicas (id, url, started_at, heartbeat_at, host, pid, version, problems)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       ON CONFLICT (id) DO UPDATE SET url = excluded.url, heartbeat_at = excluded.heartbeat_at`,
      [
        this.replicaId,
        this.url,
        this.startedAt,
        now,
        p?.host ?? null,
        p?.pid ?? null,
        p?.version ?? null,
        this.o.problems?.() ?? [],
      ],
    );
  }

  private async lostTrack(): Promise<void> {
    await this.register();
    // Ended and dropped first, released after: a claim already on its way lands before the release.
    this.dropOwnSessions();
    await this.outbox.releaseAll();
  }

  /** Ends every own session (1012 through `onLost`) and drops what was to be said of them. */
  private dropOwnSessions(): number {
    this.outbox.dropSessions();
    return this.picture.loseAllOwn();
  }
}
