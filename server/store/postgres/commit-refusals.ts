import type pg from 'pg';
import { DomainError } from '../../../shared/errors.js';
import { ChangeUnconfirmed, type LateOutcome } from '../store.js';
import { CommitOutcomeUnknown, WriteConflict } from './commit.js';
import { askCommitOutcome, LOST_COMMIT_LATE_ASK_MS, type LostCommitOutcome } from './lost-commit.js';
import type { Pending } from './queued-transactions.js';

/**
 * What each caller of a commit that failed hears. The database refused it, or could not be reached:
 * STORE_UNAVAILABLE, nothing was changed. Its COMMIT's answer was lost and the database could not
 * be asked what became of it: "it may have been saved" (a ChangeUnconfirmed), and the asking goes on
 * in the background (LOST_COMMIT_LATE_ASK_MS, until `stopped`), so that a change saved after all
 * still reaches whoever follows `landed` (its audit event). The caller's PgStore reads the whole
 * state again meanwhile (the feed is marked gapped), so memory ends as the database has it.
 */
export function refusalsOf(
  error: unknown,
  pool: pg.Pool,
  stopped: () => boolean,
): (pending: Pending) => unknown {
  if (!(error instanceof CommitOutcomeUnknown)) {
    const why =
      error instanceof WriteConflict
        ? 'other servers kept changing the same records'
        : ((error as { code?: string }).code ?? (error as Error).message ?? 'database unreachable');
    const reason = new DomainError(
      'STORE_UNAVAILABLE',
      `The server could not save the change (${why}); nothing was changed.`,
    );
    return () => reason;
  }
  const outcome = error.lost
    ? askCommitOutcome(pool, error.lost, { withinMs: LOST_COMMIT_LATE_ASK_MS, pauseMs: 1000, stopped })
    : Promise.resolve<LostCommitOutcome>('unknown');
  const message =
    'The connection to the database was lost as the change was committed, and the database could not be asked what became of it: it may have been saved. This server reads the database again; check before trying again.';
  return (pending) =>
    new ChangeUnconfirmed(
      message,
      outcome.then(
        (known): LateOutcome =>
          known === 'committed'
            ? { saved: true, result: pending.result }
            : { saved: known === 'aborted' ? false : 'unknown' },
      ),
    );
}
