import type { StoreData } from './records.js';

export type StoreSection = 'groups' | 'provisioningKeys' | 'connectors' | 'apiKeys';

/**
 * The store's records as they were at one instant, readable over many turns of the event loop while
 * the store goes on changing (for online backups). Holds references, not copies: a record changed
 * after the instant is copied, before its change, once per snapshot. `release` stops that.
 */
export interface StoreSnapshot {
  sections: Array<[StoreSection, readonly object[]]>;
  /** The record as it was at the instant (pass an element of `sections`). */
  asOfSnapshot(record: object): object;
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
  /** Reads the current state. The callback must not keep or mutate what it is given. */
  read<T>(fn: (data: Readonly<StoreData>) => T): T;
  /**
   * Applies `fn` to the state at once (synchronously, before `transact` returns) and resolves after
   * the change is on disk. If `fn` throws,
   * nothing changes. If the write fails, the state returns to what is on disk and the promise rejects
   * with a STORE_UNAVAILABLE DomainError.
   */
  transact<T>(fn: (data: StoreData) => T): Promise<T>;
  /** Applies a loss-tolerant change now and persists it lazily with a later write. */
  touch(fn: (data: StoreData) => void): void;
  /** The records at this instant, without copying them all now (see StoreSnapshot). */
  snapshot(): StoreSnapshot;
  /** Writes anything pending and stops. */
  close(): Promise<void>;
}

/**
 * Applies a change now and hands back its result at once, together with the promise of its
 * durability: for the live side of security actions (revoke, delete), which must cut an agent off
 * without waiting for a write that grows with the whole file. The caller still awaits `durable`
 * before it answers; if that write fails the state returns to the disk's, and the agent that was
 * cut off stays cut off (it fails safe).
 */
export function applyNow<T>(
  store: Store,
  fn: (data: StoreData) => T,
): { applied: T | undefined; durable: Promise<T> } {
  let applied: T | undefined;
  const durable = store.transact((data) => {
    applied = fn(data);
    return applied;
  });
  return { applied, durable };
}
