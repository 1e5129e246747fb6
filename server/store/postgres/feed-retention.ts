import type pg from 'pg';
import type { Clock } from '../../clock.js';
import type { FeedPosition } from './changes.js';
import { checkOut } from './checked-out.js';

/**
 * How long the change feed keeps its rows. A row goes once every live replica has read it and it is
 * older than `retentionMs`, and in any case once it is older than `maxAgeMs`: a replica silent for
 * that long (cut off, stopped without saying so) holds nothing back, and when it comes back it finds
 * the pruned horizon past its position and loads the whole state again.
 */
export interface FeedRetention {
  /** @default 600000 (10 minutes) */
  retentionMs: number;
  /** @default 3600000 (1 hour) */
  maxAgeMs: number;
}

export const DEFAULT_FEED_RETENTION: FeedRetention = { retentionMs: 10 * 60_000, maxAgeMs: 60 * 60_000 };
/** The bounds of --feed-max-age. */
export const MIN_FEED_MAX_AGE_MS = 5 * 60_000;
export const MAX_FEED_MAX_AGE_MS = 7 * 24 * 60 * 60_000;

/** The retention of a feed that keeps unread changes `maxAgeMs`: read ones go after 10 minutes, or sooner. */
export function feedRetentionFor(maxAgeMs: number): FeedRetention {
  return { retentionMs: Math.min(DEFAULT_FEED_RETENTION.retentionMs, maxAgeMs), maxAgeMs };
}

/** The advisory lock one replica holds while it prunes the feed (the others skip their turn). */
export const FEED_PRUNE_LOCK = '1717921124'; // 0x66656564, "feed"

/** Rows one prune statement removes; each statement is a short transaction of its own. */
const PRUNE_BATCH_ROWS = 5000;
/** Batches in one prune run (50,000 rows): the next run takes the rest. */
const PRUNE_MAX_BATCHES = 10;

/** Records how far this replica has read the feed (its position's xmin), at `nowMs` by its clock. */
export async function reportReadPosition(
  db: pg.Pool | pg.ClientBase,
  origin: string,
  xmin: string,
  nowMs: number,
): Promise<void> {
  await db.query(
    `INSERT INTO store_feed_readers (origin, read_xmin, heartbeat_at) VALUES ($1, $2::xid8, $3)
     ON CONFLICT (origin) DO UPDATE SET read_xmin = EXCLUDED.read_xmin, heartbeat_at = EXCLUDED.heartbeat_at`,
    [origin, xmin, nowMs],
  );
}

/** A replica that stops holds nothing back any more (it loads the whole state when it starts). */
export async function forgetReader(db: pg.Pool | pg.ClientBase, origin: string): Promise<void> {
  await db.query(`DELETE FROM store_feed_readers WHERE origin = $1`, [origin]);
}

/**
 * Removes the feed rows past `retention` (see FeedRetention), oldest first, in short batches, and
 * raises the pruned horizon in the same statement as each delete, so a reader's one-snapshot read
 * sees the rows or the horizon that says they are gone. One replica prunes at a time (an advisory
 * lock): the others get null at once. Returns the number of rows removed.
 */
export async function pruneChanges(
  pool: pg.Pool,
  retention: FeedRetention,
  nowMs: number,
): Promise<number | null> {
  const { retentionMs, maxAgeMs } = retention;
  if (!(retentionMs >= 0 && maxAgeMs >= retentionMs))
    throw new TypeError('pruneChanges: need 0 <= retentionMs <= maxAgeMs');
  const { client, release } = await checkOut(pool);
  try {
    const locked = await client.query(`SELECT pg_try_advisory_lock($1::bigint) AS ok`, [FEED_PRUNE_LOCK]);
    if (!locked.rows[0].ok) return null;
    try {
      await client.query(`DELETE FROM store_feed_readers WHERE heartbeat_at < $1`, [nowMs - maxAgeMs]);
      // The oldest position among the live readers: every row of an older transaction was read by all.
      const oldest = await client.query<{ xmin: string }>(
        `SELECT read_xmin::text AS xmin FROM store_feed_readers ORDER BY read_xmin LIMIT 1`,
      );
      const readByAll = oldest.rows[0]?.xmin ?? null;
      let removed = 0;
      for (let batch = 0; batch < PRUNE_MAX_BATCHES; batch++) {
        // No min()/max() over xid8 before PostgreSQL 14: ORDER BY … LIMIT 1 instead.
        const deleted = await client.query<{ n: number }>(
          `WITH gone AS (
             DELETE FROM store_changes WHERE seq IN (
               SELECT seq FROM store_changes
                WHERE committed_at < $1 AND (committed_at < $2 OR xid < $3::xid8)
                ORDER BY committed_at LIMIT $4)
             RETURNING xid),
           newest AS (SELECT xid FROM gone ORDER BY xid DESC LIMIT 1),
           h AS (UPDATE store_feed_horizon SET pruned_through = GREATEST(pruned_through, newest.xid)
                   FROM newest)
           SELECT count(*)::int AS n FROM gone`,
          [new Date(nowMs - retentionMs), new Date(nowMs - maxAgeMs), readByAll, PRUNE_BATCH_ROWS],
        );
        const n = deleted.rows[0]?.n ?? 0;
        removed += n;
        if (n < PRUNE_BATCH_ROWS) break;
      }
      return removed;
    } finally {
      await client.query(`SELECT pg_advisory_unlock($1::bigint)`, [FEED_PRUNE_LOCK]);
    }
  } finally {
    release();
  }
}

/** What `forgetRestoredFeed` removed: all zero on a database that was not restored from another cluster. */
export interface RestoredFeed {
  changes: number;
  readers: number;
  horizonLowered: boolean;
  /** The dumped cluster's replicas and the agent sessions they held: none of them runs on this one. */
  replicas: number;
  sessions: number;
}

/**
 * Forgets the feed rows of a database restored (pg_dump, pg_restore) into another cluster whose
 * transaction ids are behind the ones those rows carry. Nothing else in the database holds such ids,
 * so the rows are a dead cluster's feed, already in the restored records; left there, every feed read
 * would fetch them again (a reader keeps a row of a transaction at or past its xmin until the xmin
 * passes it), each second, until pruned. Their readers' positions and the pruned horizon come from
 * that cluster too: dropped, and lowered to now. So do the replicas the dump listed and their agent
 * sessions: their heartbeats, seconds old in a fresh dump, kept them alive (their agents shown
 * connected, revokes waiting on them) for up to the dead-after bound. Run at start-up before the
 * state is loaded, so no reader can miss them. A row of this cluster is never ahead of the
 * transaction that runs this, and a replica of this cluster registers only after it: a replica
 * starting meanwhile is not in this statement's snapshot, so its row stays.
 */
export async function forgetRestoredFeed(db: pg.ClientBase): Promise<RestoredFeed> {
  const result = await db.query<{
    changes: number;
    readers: number;
    lowered: number;
    replicas: number;
    sessions: number;
  }>(
    `WITH now AS (SELECT pg_current_xact_id() AS xid),
     restored AS (
       SELECT EXISTS (SELECT 1 FROM store_changes c, now WHERE c.xid > now.xid)
           OR EXISTS (SELECT 1 FROM store_feed_readers r, now WHERE r.read_xmin > now.xid)
           OR EXISTS (SELECT 1 FROM store_feed_horizon h, now WHERE h.pruned_through > now.xid) AS yes
     ),
     changes AS (DELETE FROM store_changes c USING now WHERE c.xid > now.xid RETURNING 1),
     readers AS (DELETE FROM store_feed_readers r USING now WHERE r.read_xmin > now.xid RETURNING 1),
     lowered AS (UPDATE store_feed_horizon h SET pruned_through = now.xid FROM now
                  WHERE h.pruned_through > now.xid RETURNING 1),
     sessions AS (DELETE FROM agent_sessions WHERE (SELECT yes FROM restored) RETURNING 1),
     replicas AS (DELETE FROM replicas WHERE (SELECT yes FROM restored) RETURNING 1)
     SELECT (SELECT count(*) FROM changes)::int AS changes, (SELECT count(*) FROM readers)::int AS readers,
            (SELECT count(*) FROM lowered)::int AS lowered, (SELECT count(*) FROM replicas)::int AS replicas,
            (SELECT count(*) FROM sessions)::int AS sessions`,
  );
  const row = result.rows[0];
  return {
    changes: row?.changes ?? 0,
    readers: row?.readers ?? 0,
    horizonLowered: (row?.lowered ?? 0) > 0,
    replicas: row?.replicas ?? 0,
    sessions: row?.sessions ?? 0,
  };
}

/** The pruned horizon now (see the migration of `store_feed_horizon`). */
export async function prunedHorizon(db: pg.Pool | pg.ClientBase): Promise<string> {
  const result = await db.query<{ xid: string }>(
    `SELECT pruned_through::text AS xid FROM store_feed_horizon`,
  );
  return result.rows[0]?.xid ?? '0';
}

export interface FeedUpkeepOptions {
  pool: pg.Pool;
  origin: string;
  clock: Clock;
  retention: FeedRetention;
  /** Where this replica's feed has read to now. */
  position: () => FeedPosition;
  /** How often this replica writes its position. @default 5000 */
  reportEveryMs?: number;
  /** How often it tries to prune (one replica at a time does). @default 60000 */
  pruneEveryMs?: number;
  onError?: (error: Error) => void;
}

/**
 * A replica's part in keeping the change feed short: it writes how far it has read every few
 * seconds, and every minute or so tries to prune (the replica that gets the lock does, the others
 * skip). Its row goes when it stops. `run` is the periodic step; tests call it with a moved clock.
 */
export class FeedUpkeep {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private lastPruneAt: number;
  /** Rows this replica pruned since it started. */
  pruned = 0;
  /** Told of each prune that removed rows. */
  onPruned: ((rows: number) => void) | undefined;

  constructor(private readonly options: FeedUpkeepOptions) {
    this.lastPruneAt = options.clock.now();
  }

  async start(): Promise<void> {
    await this.report();
    this.timer = setInterval(() => void this.run(), this.options.reportEveryMs ?? 5000);
    this.timer.unref();
  }

  /** Writes the position, and prunes when a prune is due; never throws (onError hears). */
  run(): Promise<void> {
    this.running ??= (async () => {
      try {
        await this.report();
        if (this.options.clock.now() - this.lastPruneAt >= (this.options.pruneEveryMs ?? 60_000))
          await this.prune();
      } catch (error) {
        this.options.onError?.(error as Error);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** Prunes now if no other replica is (null then); returns the rows removed. */
  async prune(): Promise<number | null> {
    this.lastPruneAt = this.options.clock.now();
    const removed = await pruneChanges(this.options.pool, this.options.retention, this.options.clock.now());
    if (removed) {
      this.pruned += removed;
      this.onPruned?.(removed);
    }
    return removed;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
    await forgetReader(this.options.pool, this.options.origin).catch(() => {});
  }

  private async report(): Promise<void> {
    const { pool, origin, clock, position } = this.options;
    await reportReadPosition(pool, origin, position().xmin, clock.now());
  }
}
