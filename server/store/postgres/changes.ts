import type pg from 'pg';
import type { StoreSection } from '../store.js';

/** One record's change as the feed carries it: the new body (null: deleted) and the row's new version. */
export interface ChangeOp {
  section: StoreSection;
  id: string;
  body: object | null;
  version: number;
}

/** A committed transaction's changes, in the order the feed hands them over. */
export interface ChangeRow {
  seq: number;
  origin: string;
  ops: ChangeOp[];
  /** When its transaction began, on the database's clock (epoch ms): its commit came after. */
  committedAt: number;
}

/**
 * Where a reader of the feed stands. `xmin` is the oldest transaction that was still running at its
 * last read (every older one had finished and was read); rows from `xmin` on are read again at the
 * next read, so `seen` lists those already handed over.
 */
export interface FeedPosition {
  xmin: string;
  seen: ReadonlySet<number>;
}

/** The position of a reader that has every change committed before `xmin`. */
export function positionAt(xmin: string): FeedPosition {
  return { xmin, seen: new Set() };
}

/** The change feed's notification channel: a wake-up only; readers read the table. */
export const CHANGES_CHANNEL = 'store_changes';

/**
 * Reads the changes past `from` in one statement (one snapshot, so the xmin it returns matches the
 * rows it returns, and the pruned horizon matches both). Returns the rows not handed over before, in
 * sequence order, the next position, and the pruned horizon (feed-retention.ts): rows of transactions
 * up to it may be gone.
 *
 * The rows of `ownOrigin` (the reader's own commits) come with their deletions only: the reader holds
 * the rest already, and parsing each of its records back cost a replica taking a fleet's first
 * connects a record's JSON per connect.
 */
export async function readChanges(
  db: pg.ClientBase | pg.Pool,
  from: FeedPosition,
  ownOrigin: string | null = null,
): Promise<{ rows: ChangeRow[]; next: FeedPosition; horizon: string; serverStartedAt: string }> {
  const result = await db.query<{
    xmin: string;
    horizon: string | null;
    started: string;
    seq: string | null;
    xid: string | null;
    origin: string;
    ops: ChangeOp[];
    committed_at: number | null;
  }>(
    `WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
                       (SELECT pruned_through FROM store_feed_horizon) AS horizon)
     SELECT s.xmin::text AS xmin, s.horizon::text AS horizon, pg_postmaster_start_time()::text AS started,
            c.seq::text AS seq, c.xid::text AS xid,
            c.origin,
            CASE WHEN c.origin IS DISTINCT FROM $2 THEN c.ops
                 ELSE (SELECT COALESCE(jsonb_agg(o ORDER BY n), '[]'::jsonb)
                         FROM jsonb_array_elements(c.ops) WITH ORDINALITY AS e(o, n)
                        WHERE o->'body' = 'null'::jsonb) END AS ops,
            (extract(epoch FROM c.committed_at) * 1000)::float8 AS committed_at
       FROM s LEFT JOIN store_changes c ON c.xid >= $1::xid8
      ORDER BY c.seq`,
    [from.xmin, ownOrigin],
  );
  const xmin = result.rows[0]?.xmin ?? from.xmin;
  const horizon = result.rows[0]?.horizon ?? '0';
  const rows: ChangeRow[] = [];
  const seen = new Set<number>();
  for (const row of result.rows) {
    if (row.seq === null || row.xid === null) continue;
    const seq = Number(row.seq);
    // Rows of transactions at or past the new xmin come back at the next read: remember them.
    if (BigInt(row.xid) >= BigInt(xmin)) seen.add(seq);
    if (!from.seen.has(seq))
      rows.push({ seq, origin: row.origin, ops: row.ops, committedAt: row.committed_at ?? 0 });
  }
  return { rows, next: { xmin, seen }, horizon, serverStartedAt: result.rows[0]?.started ?? '' };
}

/** The feed position that matches the current state of the database (taken with a full load). */
export async function currentPosition(db: pg.ClientBase | pg.Pool): Promise<FeedPosition> {
  const result = await db.query<{ xmin: string }>(
    `SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin`,
  );
  const xmin = result.rows[0]?.xmin;
  if (xmin === undefined) throw new Error('pg_current_snapshot() returned no row');
  return positionAt(xmin);
}

/**
 * Whether a reader at `position` may have lost rows to pruning: the horizon moved since the reader
 * last accounted for it (`known`: the one its load or last read saw) and reaches its position.
 */
export function missedPrunedRows(
  position: FeedPosition,
  horizon: string,
  known: string | undefined,
): boolean {
  return horizon !== known && BigInt(horizon) >= BigInt(position.xmin);
}
