import { DomainError } from '../../shared/errors.js';
import { emptyData, type StoreData } from './records.js';
import type { Store, StoreSection, StoreSnapshot } from './store.js';

/** A Store that keeps everything in memory: for unit tests and throwaway servers. */
export class MemoryStore implements Store {
  private data: StoreData;
  /** Makes the next transactions fail, as a full disk would: for tests of the failure path. */
  failWrites = false;

  constructor(initial: StoreData = emptyData()) {
    this.data = structuredClone(initial);
  }

  read<T>(fn: (data: Readonly<StoreData>) => T): T {
    return fn(this.data);
  }

  async transact<T>(fn: (data: StoreData) => T): Promise<T> {
    const before = this.failWrites ? structuredClone(this.data) : null;
    const result = fn(this.data);
    if (before) {
      this.data = before;
      throw new DomainError('STORE_UNAVAILABLE');
    }
    return result;
  }

  touch(fn: (data: StoreData) => void): void {
    fn(this.data);
  }

  /** A deep copy: this store is for tests, where simple beats cheap. */
  snapshot(): StoreSnapshot {
    const copy = structuredClone(this.data);
    const sections = (['groups', 'provisioningKeys', 'connectors', 'apiKeys'] as const).map(
      (section): [StoreSection, object[]] => [section, Object.values(copy[section])],
    );
    return { sections, asOfSnapshot: (record) => record, release: () => {} };
  }

  async close(): Promise<void> {}
}
