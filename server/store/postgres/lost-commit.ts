import type pg from 'pg';

/** How long a commit whose answer was lost asks the database what became of it, before calling it unknown. */
export const LOST_COMMIT_ASK_MS = 3000;
/**
 * How long it goes on asking after that, in the background, so that a change saved after all (a
 * failover is the usual cause, and takes longer than 3 s) is still audited: see PgStore.
 */
export const LOST_COMMIT_LATE_ASK_MS = 120_000;
/** The pause between two questions while the transaction is still in progress. */
const ASK_AGAIN_MS = 100;

export interface AskOptions {
  /** @default LOST_COMMIT_ASK_MS */
  withinMs?: number;
  /** @default ASK_AGAIN_MS (100 ms) */
  pauseMs?: number;
  /** Stops asking (unknown) once this says so: the store closed. */
  stopped?: () => boolean;
}

export type LostCommitOutcome = 'committed' | 'aborted' | 'unknown';

/** The commit to ask about: its transaction, and the change-feed row it wrote (seq, origin). */
export interface LostCommit {
  xid: string;
  seq: number;
  origin: string;
}

/**
 * What became of a commit whose COMMIT got no answer (its connection went as it committed), asked on
 * another connection. Its change-feed row, written in the same transaction, is there only if it
 * committed: that is the proof (a transaction id alone is not: a standby promoted without that
 * transaction's WAL hands the same id out again). Without the row, `pg_xact_status` tells a
 * transaction whose backend has not yet noticed its client gone ('in progress': asked again) from
 * one that is not in this database ('aborted': the COMMIT never arrived and the backend rolled
 * back; or 'committed': someone else's, after a failover). Asked until `withinMs`; a database that
 * does not answer by then, or no longer knows the transaction, leaves it unknown.
 */
export async function askCommitOutcome(
  pool: pg.Pool,
  commit: LostCommit,
  { withinMs = LOST_COMMIT_ASK_MS, pauseMs = ASK_AGAIN_MS, stopped = () => false }: AskOptions = {},
): Promise<LostCommitOutcome> {
  const deadline = Date.now() + withinMs;
  // Bounded by the deadline; the count is a second bound should the clock misbehave.
  for (let asked = 0; asked < 1000; asked++) {
    const left = deadline - Date.now();
    if (left <= 0 || stopped()) return 'unknown';
    const answer = await withinTime(ask(pool, commit), left).catch(() => undefined);
    if (answer === 'saved') return 'committed';
    if (answer === 'aborted' || answer === 'committed') return 'aborted';
    if (answer === null) return 'unknown';
    // 'in progress', or no answer yet: again, shortly.
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(pauseMs, Math.max(0, deadline - Date.now()))),
    );
  }
  return 'unknown';
}

/** 'saved' when the commit's feed row is there, else the transaction's status (null: not known). */
async function ask(pool: pg.Pool, { xid, seq, origin }: LostCommit): Promise<string | null> {
  const row = await pool.query('SELECT 1 FROM store_changes WHERE seq = $1 AND origin = $2', [seq, origin]);
  if ((row.rowCount ?? 0) > 0) return 'saved';
  const status = await pool.query<{ status: string | null }>('SELECT pg_xact_status($1::xid8) AS status', [
    xid,
  ]);
  return status.rows[0]?.status ?? null;
}

/** `promise`, or a rejection once `ms` passed (the promise goes on; its outcome is dropped). */
function withinTime<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  promise.catch(() => {});
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
