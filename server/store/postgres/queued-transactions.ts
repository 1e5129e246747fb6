import { DomainError } from '../../../shared/errors.js';
import type { StoreData } from '../records.js';
import { ChangeUnconfirmed, type LateOutcome, type StoreTransaction } from '../store.js';
import { TrackedTransaction } from './tracked-transaction.js';

/** A transaction applied to memory, waiting for its commit: its function, its changes, its caller. */
export interface Pending {
  fn: (tx: StoreTransaction) => unknown;
  tx: TrackedTransaction;
  result: unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * The transactions applied to memory and not yet committed, in the order they ran. Another
 * replica's change (or a lost commit) is applied beneath them: they are undone, newest first, and
 * their functions run again over the result.
 */
export class QueuedTransactions {
  private items: Pending[] = [];

  constructor(private readonly data: StoreData) {}

  get length(): number {
    return this.items.length;
  }

  push(pending: Pending): void {
    this.items.push(pending);
  }

  /** The transactions queued now: the batch of one commit. */
  batch(): Pending[] {
    return this.items.slice();
  }

  /** The first `count` committed (transactions queued meanwhile came after them): their callers hear. */
  committed(count: number): void {
    for (const pending of this.items.splice(0, count)) pending.resolve(pending.result);
  }

  /** Undoes every one, newest first: memory is the committed state again. */
  undo(): void {
    for (let i = this.items.length - 1; i >= 0; i--) this.items[i]?.tx.rollback();
  }

  /** Runs their functions again, in order (after `undo` and a change beneath); one that throws now rejects its caller. */
  rerun(): void {
    const kept: Pending[] = [];
    for (const pending of this.items) {
      const tx = new TrackedTransaction(this.data);
      try {
        pending.result = pending.fn(tx);
        pending.tx = tx;
        kept.push(pending);
      } catch (error) {
        tx.rollback();
        pending.reject(error);
      } finally {
        tx.end();
      }
    }
    this.items = kept;
  }

  /** Rejects every one with its `reason` (after `undo`): none was committed, or none is known to be. */
  failAll(reason: (pending: Pending) => unknown): void {
    for (const pending of this.items.splice(0)) pending.reject(reason(pending));
  }
}

/**
 * A transaction's resolve and reject, with its caller answered STORE_UNAVAILABLE after `waitMs` if
 * the commit has not settled by then. A database that stops answering (a stalled host, a lost
 * network) would keep the caller waiting as long as the commit; the commit itself goes on: the
 * change may still be saved, and this replica already shows it (as it would undo it on a failure).
 * What the commit comes to after that answer settles the refusal's `landed` (ChangeUnconfirmed).
 */
export function answeredWithin<T>(
  waitMs: number,
  resolve: (value: T) => void,
  reject: (error: unknown) => void,
): Pick<Pending, 'resolve' | 'reject'> {
  let late: ((outcome: LateOutcome) => void) | null = null;
  const unconfirmed = setTimeout(() => {
    const landed = new Promise<LateOutcome>((settle) => {
      late = settle;
    });
    reject(
      new ChangeUnconfirmed(
        `The database has not confirmed the change within ${waitMs / 1000} s; it may still be saved when the database answers: check before trying again.`,
        landed,
      ),
    );
  }, waitMs);
  return {
    resolve: (value) => {
      clearTimeout(unconfirmed);
      if (late) late({ saved: true, result: value });
      else resolve(value as T);
    },
    reject: (error) => {
      clearTimeout(unconfirmed);
      // A commit whose answer was lost (CommitOutcomeUnknown) fails with mayBeSaved: still unknown.
      const unknown = error instanceof DomainError && error.details.mayBeSaved === true;
      if (late) late(unknown ? { saved: 'unknown' } : { saved: false });
      else reject(error);
    },
  };
}
