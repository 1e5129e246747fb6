import type pg from 'pg';
import { freezeRecords, setRecord } from '../record-tables.js';
import { emptyData, type StoreData } from '../records.js';
import { SECTIONS, type StoreSection } from '../store.js';
import type { FeedPosition } from './changes.js';
import { checkOut } from './checked-out.js';
import { CommittedVersions } from './committed-versions.js';
import { prunedHorizon } from './feed-retention.js';

export interface LoadedState {
  data: StoreData;
  versions: CommittedVersions;
  /** Where the change feed must start so that it hands over exactly the changes `data` lacks. */
  position: FeedPosition;
  /** The pruned horizon in the same snapshot: pruning up to it took nothing `data` lacks. */
  horizon: string;
  /** When the PostgreSQL server that answered started (the feed's first read compares it). */
  serverStartedAt: string;
}

/**
 * Reads every record and the feed position in one snapshot (a REPEATABLE READ transaction): the
 * position's `seen` lists the feed rows the snapshot already holds among those the feed reads again
 * from its xmin on, so none of them is applied twice and none is missed.
 */
export async function loadState(pool: pg.Pool): Promise<LoadedState> {
  const { client, release } = await checkOut(pool);
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = await client.query<{ xmin: string; started: string }>(
      'SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin, pg_postmaster_start_time()::text AS started',
    );
    const xmin = snapshot.rows[0]?.xmin;
    if (xmin === undefined) throw new Error('pg_current_snapshot() returned no row');
    const records = await client.query<{ section: string; id: string; body: object; version: string }>(
      'SELECT section, id, body, version::text AS version FROM store_records',
    );
    const seen = await client.query<{ seq: string }>(
      'SELECT seq::text AS seq FROM store_changes WHERE xid >= $1::xid8',
      [xmin],
    );
    const horizon = await prunedHorizon(client);
    await client.query('COMMIT');
    const data = emptyData();
    const versions = new CommittedVersions();
    const known = new Set<string>(SECTIONS);
    for (const row of records.rows) {
      // A section this build does not know (written by a newer one) is left alone.
      if (!known.has(row.section)) continue;
      const section = row.section as StoreSection;
      setRecord(data, section, row.id, row.body);
      versions.committed({ section, id: row.id, body: row.body, version: Number(row.version) }, false);
    }
    return {
      data: freezeRecords(data),
      versions,
      position: { xmin, seen: new Set(seen.rows.map((row) => Number(row.seq))) },
      horizon,
      serverStartedAt: snapshot.rows[0]!.started,
    };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  } finally {
    release();
  }
}
