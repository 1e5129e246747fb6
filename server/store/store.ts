import { DomainError } from '../../shared/errors.js';
import type { ApiKeyRecord, ConnectorRecord, GroupRecord, ProvisioningKeyRecord } from './records.js';

/** The record type each section of the store holds, by section name. */
export interface SectionRecords {
  groups: GroupRecord;
  provisioningKeys: ProvisioningKeyRecord;
  connectors: ConnectorRecord;
  apiKeys: ApiKeyRecord;
}
export type StoreSection = keyof SectionRecords;
export const SECTIONS: readonly StoreSection[] = ['groups', 'provisioningKeys', 'connectors', 'apiKeys'];

/**
 * The state as a reader sees it. Records are frozen (deeply): a record is changed by replacing it
 * through a transaction, never in place, so a stray write throws instead of being silently lost.
 */
export interface StoreView {
  get<S extends StoreSection>(section: S, id: string): Readonly<SectionRecords[S]> | undefined;
  /** Every record of a section, in insertion order. */
  list<S extends StoreSection>(section: S): Readonly<SectionRecords[S]>[];
}

/** A view that also changes records; each change is journalled as it is named here. */
export interface StoreTransaction extends StoreView {
  /** Adds the record, or replaces the one of the same id. The store freezes it. */
  put<S extends StoreSection>(section: S, record: SectionRecords[S]): void;
  /** Replaces top-level fields of an existing record (TypeError if there is none); returns the new record. */
  patch<S extends StoreSection>(
    section: S,
    id: string,
    fields: Partial<SectionRecords[S]>,
  ): Readonly<SectionRecords[S]>;
  /** Removes the record; false if there was none. */
  delete(section: StoreSection, id: string): boolean;
}

/**
 * The store's records as they were at one instant, readable over many turns of the event loop while
 * the store goes on changing (for online backups). Records are immutable, so the snapshot holds
 * references and copies nothing. `release` says the reader is done.
 */
export interface StoreSnapshot {
  sections: Array<[StoreSection, readonly object[]]>;
  release(): void;
}

/**
 * The persistence boundary. All state lives in memory and every change is a synchronous function over
 * it, so a check and the change it guards can never interleave with another request (that is what
 * makes "no enrollment with a key after its regeneration returned" hold). `transact` resolves only
 * once the change is durable; `touch` is for hot, loss-tolerant fields (last seen, last used) that
 * ride along with the next write instead of causing one.
 */
export interface Store {
  /** Reads the current state. */
  read<T>(fn: (view: StoreView) => T): T;
  /**
   * Applies `fn` to the state at once (synchronously, before `transact` returns) and resolves after
   * the change is on disk. If `fn` throws, nothing changes. If the write fails, the state returns to
   * what is on disk and the promise rejects with a STORE_UNAVAILABLE DomainError.
   *
   * `fn` may run more than once: a store shared by several servers (PgStore) undoes it and runs it
   * again over another server's newer state when that one committed first, and resolves with the
   * last run's result (or rejects with what the last run threw). So `fn` must do nothing but read
   * and change records through `tx` and return a value: no I/O, no events, no counters. Fresh random
   * ids made inside it are fine (the last run's are the ones kept and returned).
   */
  transact<T>(fn: (tx: StoreTransaction) => T): Promise<T>;
  /**
   * Replaces top-level fields of a record now and persists them lazily with a later write; never
   * rolled back. Returns false (and does nothing) when there is no such record.
   */
  touch<S extends StoreSection>(section: S, id: string, fields: Partial<SectionRecords[S]>): boolean;
  /** The records at this instant, without copying them (see StoreSnapshot). */
  snapshot(): StoreSnapshot;
  /**
   * Resolves once every change committed anywhere before the call is in this store's memory. At
   * once for a store no other process writes; a replica reads the change feed (bounded wait).
   */
  caughtUp(): Promise<void>;
  /** Writes anything pending and stops. */
  close(): Promise<void>;
}

/** What became of a change after its caller was answered that it may still be saved. */
export type LateOutcome = { saved: true; result: unknown } | { saved: false } | { saved: 'unknown' };

/**
 * The STORE_UNAVAILABLE of a change the database had neither confirmed nor refused when the store
 * stopped waiting (PgStore's commit bound): the change is applied in memory and may still be saved.
 * `landed` settles when the database answers: `saved: true` with the transaction's result once it
 * committed after all, so that the change is still audited and still told to its agents.
 */
export class ChangeUnconfirmed extends DomainError {
  constructor(
    message: string,
    readonly landed: Promise<LateOutcome>,
  ) {
    super('STORE_UNAVAILABLE', message, { mayBeSaved: true });
  }
}

/**
 * Applies a change now and hands back its result at once, together with the promise of its
 * durability: for the live side of security actions (revoke, delete), which must cut an agent off
 * without waiting for a write that grows with the whole file. The caller still awaits `durable`
 * before it answers; if that write fails the state returns to the disk's, and the agent that was
 * cut off stays cut off (it fails safe). `applied` is the first run's result: when a shared store
 * runs `fn` again (see `transact`), `durable` carries the last run's, which is the one to report.
 */
export function applyNow<T>(
  store: Store,
  fn: (tx: StoreTransaction) => T,
): { applied: T | undefined; durable: Promise<T> } {
  let applied: T | undefined;
  const durable = store.transact((tx) => {
    applied = fn(tx);
    return applied;
  });
  return { applied, durable };
}
