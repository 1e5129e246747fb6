import { DomainError } from '../../shared/errors.js';
import { freezeRecords, RecordView, setRecord, Transaction, withFields } from './record-tables.js';
import { emptyData, type StoreData } from './records.js';
import { SECTIONS, type SectionRecords, type Store, type StoreSection, type StoreSnapshot } from './store.js';

/** A Store that keeps everything in memory: for unit tests and throwaway servers. */
export class MemoryStore implements Store {
  private readonly data: StoreData;
  private readonly view: RecordView;
  /** Makes the next transactions fail, as a full disk would: for tests of the failure path. */
  failWrites = false;
  private closed = false;

  constructor(initial: StoreData = emptyData()) {
    this.data = freezeRecords(structuredClone(initial));
    this.view = new RecordView(this.data);
  }

  read<T>(fn: (view: RecordView) => T): T {
    return fn(this.view);
  }

  transact<T>(fn: (tx: Transaction) => T): Promise<T> {
    if (this.closed) return Promise.reject(new DomainError('STORE_UNAVAILABLE', 'The store is closed.'));
    const tx = new Transaction(this.data, () => {});
    let result: T;
    try {
      result = fn(tx);
    } catch (error) {
      tx.rollback();
      return Promise.reject(error);
    } finally {
      tx.end();
    }
    if (this.failWrites) {
      tx.rollback();
      return Promise.reject(new DomainError('STORE_UNAVAILABLE'));
    }
    return Promise.resolve(result);
  }

  touch<S extends StoreSection>(section: S, id: string, fields: Partial<SectionRecords[S]>): boolean {
    const current = this.view.get(section, id);
    if (!current) return false;
    const next = withFields(current as SectionRecords[S], fields);
    if (next) setRecord(this.data, section, id, next);
    return true;
  }

  async caughtUp(): Promise<void> {}

  snapshot(): StoreSnapshot {
    return {
      sections: SECTIONS.map((section) => [section, this.view.list(section)]),
      release: () => {},
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
