import type pg from 'pg';

/** How long a commit whose answer was lost asks the database what became of it, before calling it unknown. */
export const LOST_COMMIT_ASK_MS = 3000;
/** The pause between two questions while the transaction is still in progress. */
const ASK_AGAIN_MS = 100;

export type LostCommitOutcome = 'committed' | 'aborted' | 'unknown';

/**
 * What became of transaction `xid`, whose COMMIT got no answer (its connection went as it committed).
 * PostgreSQL keeps each recent transaction's status (`pg_xact_status`), so another connection can
 * ask: 'committed', or 'aborted' (the COMMIT never arrived, and the backend rolled back when it found
 * its client gone). 'in progress' (that backend has not noticed yet, or is still committing) is asked
 * again until `withinMs`; a database that does not answer by then, or no longer knows the
 * transaction, leaves it unknown. Each question waits no longer than what is left of `withinMs`.
 */
export async function askCommitOutcome(
  pool: pg.Pool,
  xid: string,
  withinMs = LOST_COMMIT_ASK_MS,
): Promise<LostCommitOutcome> {
  const deadline = Date.now() + withinMs;
  // Bounded by the deadline; the count is a second bound should the clock misbehave.
  for (let asked = 0; asked < 1000; asked++) {
    const left = deadline - Date.now();
    if (left <= 0) return 'unknown';
    const status = await withinTime(
      pool
        .query<{ status: string | null }>('SELECT pg_xact_status($1::xid8) AS status', [xid])
        .then((result) => result.rows[0]?.status ?? null),
      left,
    ).catch(() => undefined);
    if (status === 'committed' || status === 'aborted') return status;
    if (status === null) return 'unknown';
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(ASK_AGAIN_MS, Math.max(0, deadline - Date.now()))),
    );
  }
  return 'unknown';
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
