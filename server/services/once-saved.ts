import type { Logger } from 'pino';
import { DomainError } from '../../shared/errors.js';
import { ChangeUnconfirmed } from '../store/store.js';

/** What to do once a change is saved; `late` when the database saved it after its caller had heard. */
export type AfterSaved<T> = (saved: T, late: boolean) => Promise<unknown> | undefined;

/**
 * Awaits a change's write, then runs `after` (its audit event, what it tells agents). When the store
 * answered before the database did (ChangeUnconfirmed: "it may still be saved") and the database
 * saves it after all, `after` runs then, with `late` set: the caller heard STORE_UNAVAILABLE, but a
 * change that landed must still be audited and told to its agents like any other.
 */
export async function onceSaved<T>(
  durable: Promise<T>,
  after: AfterSaved<T>,
  logger: Pick<Logger, 'error'>,
): Promise<T> {
  whenSavedLate(durable, after, logger);
  const saved = await durable;
  await after(saved, false);
  return saved;
}

/** The late half of `onceSaved` alone, for a caller that handles the answer itself (a revoke, a delete). */
export function whenSavedLate<T>(
  durable: Promise<T>,
  after: AfterSaved<T>,
  logger: Pick<Logger, 'error'>,
): void {
  durable.catch((error: unknown) => {
    if (!(error instanceof ChangeUnconfirmed)) return;
    error.landed
      .then((outcome) => (outcome.saved === true ? after(outcome.result as T, true) : undefined))
      .catch((err: unknown) =>
        logger.error(
          { err },
          'a change saved after its caller was answered could not be audited or announced',
        ),
      );
  });
}

/** Marks the audit details of a change saved after its caller heard it may still be saved. */
export function savedLate(late: boolean): { savedAfterAnswer?: true } {
  return late ? { savedAfterAnswer: true } : {};
}

/**
 * For a change whose answer holds what cannot be had again (an agent's identity, an API key's
 * secret): its audit event not written yet (AUDIT_NOT_WRITTEN: held for a retry, or refused and
 * said in the server's log) does not fail the call, which would lose that answer while the change
 * stands. Any other failure is thrown on.
 */
export function unlessAuditNotWritten(error: unknown): void {
  if (!(error instanceof DomainError && error.reason === 'AUDIT_NOT_WRITTEN')) throw error;
}
