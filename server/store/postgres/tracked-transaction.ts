import { Transaction } from '../record-tables.js';
import type { StoreData } from '../records.js';
import type { SectionRecords, StoreSection } from '../store.js';

export interface RecordKey {
  section: StoreSection;
  id: string;
}
export const recordKey = (section: string, id: string) => `${section}\u0000${id}`;

/**
 * A transaction that remembers what its outcome depended on, for the optimistic check of its commit:
 * the records it read before writing them (a record it wrote first and read after is its own value),
 * the records it wrote, and the sections it listed whole.
 */
export class TrackedTransaction extends Transaction {
  readonly reads = new Map<string, RecordKey>();
  readonly writes: ReadonlyMap<string, RecordKey>;
  readonly scanned = new Set<StoreSection>();

  constructor(data: StoreData) {
    const writes = new Map<string, RecordKey>();
    // Told before each change, while the record still holds its old value.
    super(data, (section, id) => writes.set(recordKey(section, id), { section, id }));
    this.writes = writes;
  }

  override get<S extends StoreSection>(section: S, id: string): Readonly<SectionRecords[S]> | undefined {
    const key = recordKey(section, id);
    if (!this.writes.has(key) && !this.reads.has(key)) this.reads.set(key, { section, id });
    return super.get(section, id);
  }

  override list<S extends StoreSection>(section: S): Readonly<SectionRecords[S]>[] {
    this.scanned.add(section);
    return super.list(section);
  }
}
