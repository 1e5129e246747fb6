import type pg from 'pg';
import type { StoreSection } from '../store.js';
import { CHANGES_CHANNEL, type ChangeOp, type FeedPosition } from './changes.js';
import { checkOut } from './checked-out.js';
import {
  askCommitOutcome,
  LOST_COMMIT_ASK_MS,
  type LostCommit,
  leavesOutcomeUnknown,
} from './lost-commit.js';
import { fresherStoredSql } from './touch-propagation.js';

/** Another replica changed what this transaction read: catch up and run it again. */
export class WriteConflict extends Error {
  override readonly name = 'WriteConflict';
}

/**
 * The COMMIT got no answer (its connection went), and the database could not say what became of it
 * (askCommitOutcome): the change may be in the database or not. The committer's memory cannot know
 * which, so it reads the database again; its own feed row, were it committed, would not bring the
 * change back (a replica skips its own rows).
 */
export class CommitOutcomeUnknown extends Error {
  override readonly name = 'CommitOutcomeUnknown';
  constructor(
    message: string,
    options: ErrorOptions & {
      /** The commit, to go on asking about it once the database answers (see askCommitOutcome). */
      lost?: LostCommit;
    } = {},
  ) {
    super(message, options);
    this.lost = options.lost;
  }
  readonly lost: LostCommit | undefined;
}

/** The COMMIT got no answer, and the database shows the transaction is not in it: nothing was saved. */
export class CommitRolledBack extends Error {
  override readonly name = 'CommitRolledBack';
  readonly code = 'the commit is not in the database: its connection was lost as it committed';
}

/** A COMMIT with no answer, with what is needed to ask what became of it (inside this module). */
class AnswerLost extends Error {
  constructor(
    message: string,
    readonly xid: string | null,
    readonly origin: string,
    readonly result: CommitResult,
    options: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface RecordRead {
  section: StoreSection;
  id: string;
  /** The version the transaction saw; 0: it found no such record. */
  version: number;
}

export interface RecordWrite {
  section: StoreSection;
  id: string;
  /** The record's new body; null deletes it. */
  body: object | null;
}

/**
 * Fields of a record merged into its stored body (`removed` names fields set to undefined: JSON cannot
 * say that in a merge). Loss-tolerant ones (last seen, last used) go without a new version and without
 * a feed row: other replicas see them with the record's next versioned write or at their next start.
 * With `propagate` (touch-propagation.ts says which fields), the merge gives the record a new version
 * and a feed op carrying its merged body, so the other replicas apply it as any change; it then counts
 * as a read of `version` (the committed version this replica holds), so a record another replica
 * changed meanwhile is a conflict: caught up first, never merged into a body this replica has not seen.
 */
export interface RecordTouch {
  section: StoreSection;
  id: string;
  fields: Record<string, unknown>;
  removed: string[];
  propagate?: boolean;
  version?: number;
}

export interface CommitRequest {
  /** The replica committing (carried into the feed so it can skip its own changes). */
  origin: string;
  reads: readonly RecordRead[];
  writes: readonly RecordWrite[];
  /**
   * Sections the transaction looked through as a whole (e.g. a group's connectors), and the feed
   * position its view was at: a change to one of them committed since then is a conflict.
   */
  scans?: { sections: readonly StoreSection[]; since: FeedPosition };
  /** Merged in the same transaction (rows missing by then are skipped). */
  touches?: readonly RecordTouch[];
}

/** Local fields the database kept over a whole-record write, because its copy was newer (FRESHER_WINS). */
export interface KeptFields {
  section: StoreSection;
  id: string;
  fields: Record<string, unknown>;
}

export interface CommitResult {
  seq: number;
  /** The writes, at the commit's version. */
  ops: ChangeOp[];
  /** The records whose propagated touches took the commit's version (`seq`). */
  touched: Array<[StoreSection, string]>;
  kept: KeptFields[];
}

/** PostgreSQL errors that mean "another transaction got there first": retry after catching up. */
const CONFLICT_CODES = new Set(['23505', '40001', '40P01']);

/**
 * Every commit holds this advisory lock, shared, for its transaction. A writer that keeps losing to
 * others (a hot record another replica commits to without pause: each of its checks finds a newer
 * version than it caught up to) takes it alone instead, catches up while no commit can happen, and
 * then commits what it prepared: starvation ends after a bounded number of rounds.
 */
const COMMIT_LOCK = 7_243_911_305;

/**
 * Commits one transaction's writes if nothing it read has changed (optimistic concurrency with the
 * rows locked in key order, so two commits touching the same records queue instead of deadlocking),
 * writes its change-feed row in the same transaction and wakes the other replicas. Throws
 * WriteConflict when a record it read (or a section it scanned) changed since its view was taken.
 *
 * Every record a commit writes takes the commit's feed sequence number as its version. The number is
 * drawn after the rows are locked, so a record's versions rise in the order its writes commit, also
 * across a delete and a new record of the same id (a per-row counter would start again at 1 there,
 * and a replica applying changes by version would skip the new record). A commit that writes
 * nothing (loss-tolerant touches only) adds no feed row and returns seq 0.
 *
 * Given a function instead of a request, the commit takes the commit lock alone first and asks the
 * function for its request then (see COMMIT_LOCK).
 */
export async function commitChange(
  pool: pg.Pool,
  request: CommitRequest | (() => Promise<CommitRequest>),
  lostCommitAskMs = LOST_COMMIT_ASK_MS,
): Promise<CommitResult> {
  try {
    return await commitOnce(pool, request);
  } catch (error) {
    if (!(error instanceof AnswerLost)) throw error;
    // A commit that wrote no versioned record (no feed row: loss-tolerant touches at most) is as
    // good as saved, whatever became of its COMMIT.
    if (error.xid === null || error.result.seq === 0) return error.result;
    const lost = { xid: error.xid, seq: error.result.seq, origin: error.origin };
    const outcome = await askCommitOutcome(pool, lost, { withinMs: lostCommitAskMs });
    if (outcome === 'committed') return error.result;
    if (outcome === 'aborted') throw new CommitRolledBack(error.message, { cause: error.cause });
    throw new CommitOutcomeUnknown(error.message, { cause: error.cause, lost });
  }
}

async function commitOnce(
  pool: pg.Pool,
  request: CommitRequest | (() => Promise<CommitRequest>),
): Promise<CommitResult> {
  const { client, release } = await checkOut(pool);
  try {
    // A commit that listed a section whole also takes the lock alone: its check for changes to that
    // section runs under READ COMMITTED, so two replicas each checking "no admin key yet" (or "no group
    // of that name") while the other's insert is uncommitted would both pass and both commit. Alone,
    // no other commit is in flight, and every one before it is visible to its check. Such commits
    // (group create/rename/delete, an API key's first or last) are rare next to enrollments.
    const alone = typeof request === 'function' || request.scans !== undefined;
    // One round trip (a simple query may hold two statements; the lock key is a constant).
    await client.query(`BEGIN; SELECT pg_advisory_xact_lock${alone ? '' : '_shared'}(${COMMIT_LOCK})`);
    const prepared = typeof request === 'function' ? await request() : request;
    const { xid, ...result } = await commitIn(client, prepared);
    try {
      await client.query('COMMIT');
    } catch (error) {
      if (leavesOutcomeUnknown(error))
        throw new AnswerLost(
          `no answer to COMMIT (${(error as Error).message})`,
          xid,
          prepared.origin,
          result,
          {
            cause: error,
          },
        );
      throw error;
    }
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    if (CONFLICT_CODES.has((error as { code?: string }).code ?? ''))
      throw new WriteConflict((error as Error).message);
    throw error;
  } finally {
    release();
  }
}

/** What a commit returns, and its transaction's id (null when it wrote nothing). */
type CommitWork = CommitResult & { xid: string | null };

async function commitIn(client: pg.PoolClient, request: CommitRequest): Promise<CommitWork> {
  const touches = request.touches ?? [];
  const current = await lockRecords(client, [...request.reads, ...request.writes, ...touches]);
  for (const read of request.reads) {
    const now = current.get(keyOf(read)) ?? 0;
    if (now !== read.version) {
      throw new WriteConflict(
        `${read.section}/${read.id} is at version ${now}, the transaction read ${read.version}`,
      );
    }
  }
  if (request.scans && (await changedSince(client, request.origin, request.scans))) {
    throw new WriteConflict(`a scanned section (${request.scans.sections.join(', ')}) changed`);
  }
  // A record written whole here carries its touched fields already (and a row takes one change per
  // statement); a propagated touch of a record gone from the table has nothing left to merge into.
  const written = new Set(request.writes.map(keyOf));
  const untouched = touches.filter((touch) => !written.has(keyOf(touch)));
  const versioned = untouched.filter((touch) => touch.propagate && current.has(keyOf(touch)));
  for (const touch of versioned) {
    const now = current.get(keyOf(touch));
    if (now !== touch.version) {
      throw new WriteConflict(
        `${touch.section}/${touch.id} is at version ${now}, its touch was made over ${touch.version}`,
      );
    }
  }
  const plain = untouched.filter((touch) => !touch.propagate);
  if (request.writes.length === 0 && versioned.length === 0) {
    const empty = { seq: 0, ops: [], touched: [], kept: [] };
    if (plain.length === 0) return { ...empty, xid: null };
    const merged = await client.query<{ xid: string }>(
      `WITH ${TOUCH_CTE} SELECT pg_current_xact_id()::text AS xid`,
      [JSON.stringify(plain)],
    );
    return { ...empty, xid: merged.rows[0]?.xid ?? null };
  }
  const { seq, touched, kept, xid } = await writeAll(client, request, current, {
    touches: plain,
    versioned,
  });
  return {
    xid,
    seq,
    kept,
    touched,
    ops: request.writes.map((write) => ({
      section: write.section,
      id: write.id,
      body: write.body,
      version: seq,
    })),
  };
}

const keyOf = (record: { section: string; id: string }) => `${record.section}\u0000${record.id}`;

/** Locks the rows that exist among `records`, in key order, and returns their versions. */
async function lockRecords(
  client: pg.PoolClient,
  records: ReadonlyArray<{ section: string; id: string }>,
): Promise<Map<string, number>> {
  const unique = new Map(records.map((r) => [keyOf(r), r]));
  const sections = [...unique.values()].map((r) => r.section);
  const ids = [...unique.values()].map((r) => r.id);
  const locked = await client.query<{ section: string; id: string; version: string }>(
    `SELECT r.section, r.id, r.version::text AS version
       FROM store_records r JOIN unnest($1::text[], $2::text[]) AS k(section, id)
         ON r.section = k.section AND r.id = k.id
      ORDER BY r.section, r.id
        FOR UPDATE OF r`,
    [sections, ids],
  );
  return new Map(locked.rows.map((row) => [keyOf(row), Number(row.version)]));
}

/**
 * Whether another replica changed a scanned section since `since`. This replica's own commits are
 * left out: they were made over its view, which holds them.
 */
async function changedSince(
  client: pg.PoolClient,
  origin: string,
  scans: { sections: readonly StoreSection[]; since: FeedPosition },
): Promise<boolean> {
  const found = await client.query(
    `SELECT 1 FROM store_changes
      WHERE xid >= $1::xid8 AND sections && $2::text[] AND NOT (seq = ANY($3::bigint[]))
        AND origin <> $4
      LIMIT 1`,
    [scans.since.xmin, scans.sections, [...scans.since.seen], origin],
  );
  return (found.rowCount ?? 0) > 0;
}

const TOUCH_CTE = `t AS (
  UPDATE store_records r SET body = (r.body - k.removed) || k.fields
    FROM jsonb_to_recordset($1::jsonb) AS k(section text, id text, fields jsonb, removed text[])
   WHERE r.section = k.section AND r.id = k.id)`;

/**
 * Every write, the touches, the feed row and its notification in ONE statement (a round trip costs
 * more than the work on this loaded machine: 7 round trips per commit ran at ~110/s, 1 at ~300/s).
 * The version is drawn in it, after the previous statement locked the rows. Data-modifying CTEs all
 * run, each once, whether or not the final SELECT reads them. Propagated touches (`versioned`) take
 * the new version, and their merged bodies join the feed row's ops after the writes'.
 */
async function writeAll(
  client: pg.PoolClient,
  request: CommitRequest,
  current: Map<string, number>,
  extra: { touches: readonly RecordTouch[]; versioned: readonly RecordTouch[] },
): Promise<{ seq: number; touched: Array<[StoreSection, string]>; kept: KeptFields[]; xid: string }> {
  const kind = (w: RecordWrite) => (w.body === null ? 'delete' : current.has(keyOf(w)) ? 'update' : 'insert');
  const writes = request.writes.map((w) => ({ section: w.section, id: w.id, body: w.body, kind: kind(w) }));
  const ops = request.writes.map(({ section, id, body }) => ({ section, id, body }));
  const sections = [...new Set([...request.writes, ...extra.versioned].map((w) => w.section))];
  const rows = `jsonb_to_recordset($2::jsonb) AS k(section text, id text, body jsonb, kind text)`;
  const result = await client.query<{
    seq: string;
    touched: Array<[StoreSection, string]>;
    kept: KeptFields[];
    xid: string;
  }>(
    `WITH ${TOUCH_CTE},
     v AS (SELECT nextval(pg_get_serial_sequence('store_changes', 'seq')) AS seq),
     -- The stored local fields newer than the written ones (FRESHER_WINS): kept, not taken back.
     keep AS (SELECT k.section, k.id, ${fresherStoredSql('k.section', 'r.body', 'k.body')} AS kept
                FROM ${rows} JOIN store_records r ON r.section = k.section AND r.id = k.id
               WHERE k.kind = 'update'),
     d AS (DELETE FROM store_records r USING ${rows}
            WHERE k.kind = 'delete' AND r.section = k.section AND r.id = k.id),
     -- A record the lock did not find: another transaction inserting the same id makes this one
     -- wait on the key and then fail with a unique violation (a conflict).
     i AS (INSERT INTO store_records (section, id, body, version)
           SELECT k.section, k.id, k.body, v.seq FROM ${rows}, v WHERE k.kind = 'insert'),
     u AS (UPDATE store_records r SET body = k.body || COALESCE(kp.kept, '{}'::jsonb), version = v.seq
             FROM ${rows} LEFT JOIN keep kp ON kp.section = k.section AND kp.id = k.id CROSS JOIN v
            WHERE k.kind = 'update' AND r.section = k.section AND r.id = k.id),
     vt AS (UPDATE store_records r SET body = (r.body - k.removed) || k.fields, version = v.seq
              FROM jsonb_to_recordset($7::jsonb) AS k(section text, id text, fields jsonb, removed text[]), v
             WHERE r.section = k.section AND r.id = k.id
            RETURNING jsonb_build_object('section', r.section, 'id', r.id, 'body', r.body, 'version', v.seq) AS op),
     c AS (INSERT INTO store_changes (seq, origin, sections, ops)
           SELECT v.seq, $3, $4,
                  COALESCE((SELECT jsonb_agg(
                                     CASE WHEN kp.kept IS NULL OR kp.kept = '{}'::jsonb THEN o
                                          ELSE jsonb_set(o, '{body}', (o->'body') || kp.kept) END
                                     || jsonb_build_object('version', v.seq) ORDER BY n)
                              FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS e(o, n)
                              LEFT JOIN keep kp ON kp.section = o->>'section' AND kp.id = o->>'id'), '[]'::jsonb)
                  || COALESCE((SELECT jsonb_agg(op) FROM vt), '[]'::jsonb)
             FROM v)
     SELECT v.seq::text AS seq, pg_notify($6, $3), pg_current_xact_id()::text AS xid,
            -- The writer holds the touched records already: their keys are all it needs back.
            (SELECT COALESCE(jsonb_agg(jsonb_build_array(op->>'section', op->>'id')), '[]'::jsonb) FROM vt) AS touched,
            (SELECT COALESCE(jsonb_agg(jsonb_build_object('section', section, 'id', id, 'fields', kept)), '[]'::jsonb)
               FROM keep WHERE kept <> '{}'::jsonb) AS kept
       FROM v`,
    [
      JSON.stringify(extra.touches),
      JSON.stringify(writes),
      request.origin,
      sections,
      JSON.stringify(ops),
      CHANGES_CHANNEL,
      JSON.stringify(extra.versioned),
    ],
  );
  const row = result.rows[0];
  return { seq: Number(row?.seq), touched: row?.touched ?? [], kept: row?.kept ?? [], xid: String(row?.xid) };
}
