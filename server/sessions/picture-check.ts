import type pg from 'pg';
import { CLAIM_SUM_MODULUS, type ClusterPicture } from './cluster-picture.js';
import { RESYNC_PAGE_SQL, SESSIONS_SUMMARY_SQL } from './postgres-cluster-sql.js';

const RESYNC_PAGE_ROWS = 5000;
/**
 * A periodic check reads everything even when the summary agrees, every this many checks: two
 * missed changes whose claim numbers cancel out would otherwise go unseen (5 minutes by default).
 */
const FULL_RESYNC_EVERY = 10;

export interface PictureCheckOptions {
  pool: pg.Pool;
  /** This replica: the table's rows of the others are read. */
  replicaId: string;
  picture: ClusterPicture;
  statements: { summary: number; resync: number };
  onError?: ((error: Error) => void) | undefined;
}

/** Holds one replica's picture of the other replicas' sessions to the `agent_sessions` table. */
export class PictureCheck {
  private checks = 0;

  constructor(private readonly o: PictureCheckOptions) {}

  /**
   * The periodic look at the other replicas' sessions. Notifications keep the picture true while the
   * listener is connected (and a lost listener reads everything when it is back), so this is a
   * safety net: reading every other replica's session every 30 s cost each replica ~40,000 rows a
   * time at 58,000 sessions, to find nothing. A one-row summary comes first; a picture that differs
   * from it (a change missed, or one in flight) is read in full, as is every FULL_RESYNC_EVERY-th.
   */
  async check(): Promise<void> {
    this.checks++;
    if (this.checks % FULL_RESYNC_EVERY !== 0) {
      try {
        this.o.statements.summary++;
        const { rows } = await this.o.pool.query<{ count: number; claim_sum: number }>(SESSIONS_SUMMARY_SQL, [
          this.o.replicaId,
          CLAIM_SUM_MODULUS,
        ]);
        const pictured = this.o.picture.remoteSummary();
        if (rows[0]?.count === pictured.count && rows[0].claim_sum === pictured.claimSum) return;
      } catch (error) {
        this.o.onError?.(error as Error);
        return;
      }
    }
    await this.resync();
  }

  /** Reads every other replica's session again, a page at a time, and drops what it did not confirm. */
  async resync(): Promise<void> {
    const mark = this.o.picture.readMark();
    let after = '';
    try {
      // Bounded: a page per statement, as many pages as the table has rows over the page size, plus one.
      for (let page = 0; page < 10_000; page++) {
        this.o.statements.resync++;
        const rows = await this.o.pool.query<{
          connector_id: string;
          replica_id: string;
          session_id: string;
          remote_address: string;
          connected_at: string;
        }>(RESYNC_PAGE_SQL, [this.o.replicaId, after, RESYNC_PAGE_ROWS]);
        for (const row of rows.rows)
          this.o.picture.claimed(
            row.connector_id,
            row.replica_id,
            Number(row.session_id),
            row.remote_address,
            Number(row.connected_at),
          );
        if (rows.rows.length < RESYNC_PAGE_ROWS) break;
        after = rows.rows[rows.rows.length - 1]!.connector_id;
      }
    } catch (error) {
      this.o.onError?.(error as Error);
      return;
    }
    this.o.picture.confirmedSince(mark);
  }
}
