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
 * Whether an error a COMMIT failed with leaves its outcome unknown: no SQLSTATE (the connection ended
 * or reset), or a connection exception (class 08) or an operator intervention (57P: a terminated
 * backend). Any other SQLSTATE is PostgreSQL's answer that it rolled the transaction back.
 */
export function leavesOutcomeUnknown(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57P');
}

/**
 * A transaction whose COMMIT got no answer: its id, and the mark it left if it committed (a row
 * only that transaction wrote: the proof).
 */
export interface LostTransaction {
  xid: string;
  /** Whether the transaction's mark is in the database. */
  markThere(pool: pg.Pool): Promise<boolean>;
  /**
   * What `pg_xact_status` saying 'committed' means when the mark is not there: 'aborted' when the
   * mark cannot have gone since (the id is then someone else's, handed out again after a failover);
   * 'unknown' when a later write may have replaced it.
   */
  committedWithoutMark: LostCommitOutcome;
}

/**
 * What became of a store commit whose COMMIT got no answer (its connection went as it committed),
 * asked on another connection. Its change-feed row, written in the same transaction, is there only
 * if it committed: that is the proof (a transaction id alone is not: a standby promoted without that
 * transaction's WAL hands the same id out again).
 */
export function askCommitOutcome(
  pool: pg.Pool,
  { xid, seq, origin }: LostCommit,
  options: AskOptions = {},
): Promise<LostCommitOutcome> {
  const markThere = async (asked: pg.Pool) =>
    ((await asked.query('SELECT 1 FROM store_changes WHERE seq = $1 AND origin = $2', [seq, origin]))
      .rowCount ?? 0) > 0;
  return askTransactionOutcome(pool, { xid, markThere, committedWithoutMark: 'aborted' }, options);
}

/**
 * What became of a transaction whose COMMIT got no answer, asked on another connection: committed
 * when its mark is there. Without the mark, `pg_xact_status` tells a transaction whose backend has
 * not yet noticed its client gone ('in progress': asked again) from one that is not in this database
 * ('aborted': the COMMIT never arrived and the backend rolled back; 'committed': see
 * `committedWithoutMark`). Asked until `withinMs`; a database that does not answer by then, or no
 * longer knows the transaction, leaves it unknown.
 */
export async function askTransactionOutcome(
  pool: pg.Pool,
  lost: LostTransaction,
  { withinMs = LOST_COMMIT_ASK_MS, pauseMs = ASK_AGAIN_MS, stopped = () => false }: AskOptions = {},
): Promise<LostCommitOutcome> {
  const deadline = Date.now() + withinMs;
  // Bounded by the deadline; the count is a second bound should the clock misbehave.
  for (let asked = 0; asked < 1000; asked++) {
    const left = deadline - Date.now();
    if (left <= 0 || stopped()) return 'unknown';
    const answer = await withinTime(ask(pool, lost), left).catch(() => undefined);
    if (answer === 'saved') return 'committed';
    if (answer === 'aborted') return 'aborted';
    if (answer === 'committed') return lost.committedWithoutMark;
    if (answer === null) return 'unknown';
    // 'in progress', or no answer yet: again, shortly.
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(pauseMs, Math.max(0, deadline - Date.now()))),
    );
  }
  return 'unknown';
}

/** 'saved' when the transaction's mark is there, else its status (null: not known). */
async function ask(pool: pg.Pool, lost: LostTransaction): Promise<string | null> {
  if (await lost.markThere(pool)) return 'saved';
  const status = await pool.query<{ status: string | null }>('SELECT pg_xact_status($1::xid8) AS status', [
    lost.xid,
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
