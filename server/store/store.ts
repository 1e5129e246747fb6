import type { StoreData } from './records.js';

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
   * Applies `fn` to the state at once and resolves after the change is on disk. If `fn` throws,
   * nothing changes. If the write fails, the state returns to what is on disk and the promise rejects
   * with a STORE_UNAVAILABLE DomainError.
   */
  transact<T>(fn: (data: StoreData) => T): Promise<T>;
  /** Applies a loss-tolerant change now and persists it lazily with a later write. */
  touch(fn: (data: StoreData) => void): void;
  /** Writes anything pending and stops. */
  close(): Promise<void>;
}
