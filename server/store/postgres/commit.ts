import type pg from 'pg';
import type { StoreSection } from '../store.js';
import { CHANGES_CHANNEL, type ChangeOp, type FeedPosition } from './changes.js';

/** Another replica changed what this transaction read: catch up and run it again. */
export class WriteConflict extends Error {
  override readonly name = 'WriteConflict';
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
}

/** PostgreSQL errors that mean "another transaction got there first": retry after catching up. */
const CONFLICT_CODES = new Set(['23505', '40001', '40P01']);

/**
 * Commits one transaction's writes if nothing it read has changed (optimistic concurrency with the
 * rows locked in key order, so two commits touching the same records queue instead of deadlocking),
 * writes its change-feed row in the same transaction and wakes the other replicas. Throws
 * WriteConflict when a record it read (or a section it scanned) changed since its view was taken.
 */
export async function commitChange(
  pool: pg.Pool,
  request: CommitRequest,
): Promise<{ seq: number; ops: ChangeOp[] }> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await commitIn(client, request);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    if (CONFLICT_CODES.has((error as { code?: string }).code ?? ''))
      throw new WriteConflict((error as Error).message);
    throw error;
  } finally {
    client.release();
  }
}

async function commitIn(
  client: pg.PoolClient,
  request: CommitRequest,
): Promise<{ seq: number; ops: ChangeOp[] }> {
  const current = await lockRecords(client, [...request.reads, ...request.writes]);
  for (const read of request.reads) {
    const now = current.get(keyOf(read)) ?? 0;
    if (now !== read.version) {
      throw new WriteConflict(
        `${read.section}/${read.id} is at version ${now}, the transaction read ${read.version}`,
      );
    }
  }
  if (request.scans && (await changedSince(client, request.scans))) {
    throw new WriteConflict(`a scanned section (${request.scans.sections.join(', ')}) changed`);
  }
  const ops: ChangeOp[] = [];
  for (const write of request.writes) {
    const version = (current.get(keyOf(write)) ?? 0) + 1;
    await writeRecord(client, write, version);
    current.set(keyOf(write), version);
    ops.push({ section: write.section, id: write.id, body: write.body, version });
  }
  const sections = [...new Set(request.writes.map((w) => w.section))];
  const inserted = await client.query<{ seq: string }>(
    'INSERT INTO store_changes (origin, sections, ops) VALUES ($1, $2, $3) RETURNING seq',
    [request.origin, sections, JSON.stringify(ops)],
  );
  await client.query('SELECT pg_notify($1, $2)', [CHANGES_CHANNEL, request.origin]);
  return { seq: Number(inserted.rows[0]?.seq), ops };
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

async function changedSince(
  client: pg.PoolClient,
  scans: { sections: readonly StoreSection[]; since: FeedPosition },
): Promise<boolean> {
  const found = await client.query(
    `SELECT 1 FROM store_changes
      WHERE xid >= $1::xid8 AND sections && $2::text[] AND NOT (seq = ANY($3::bigint[]))
      LIMIT 1`,
    [scans.since.xmin, scans.sections, [...scans.since.seen]],
  );
  return (found.rowCount ?? 0) > 0;
}

async function writeRecord(client: pg.PoolClient, write: RecordWrite, version: number): Promise<void> {
  if (write.body === null) {
    await client.query('DELETE FROM store_records WHERE section = $1 AND id = $2', [write.section, write.id]);
    return;
  }
  if (version === 1) {
    // A record the lock did not find: another transaction inserting the same id makes this one
    // wait on the key and then fail with a unique violation (a conflict).
    await client.query('INSERT INTO store_records (section, id, body, version) VALUES ($1, $2, $3, 1)', [
      write.section,
      write.id,
      JSON.stringify(write.body),
    ]);
    return;
  }
  await client.query('UPDATE store_records SET body = $3, version = $4 WHERE section = $1 AND id = $2', [
    write.section,
    write.id,
    JSON.stringify(write.body),
    version,
  ]);
}
