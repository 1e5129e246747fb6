import type {
  SectionRecords,
  Store,
  StoreSection,
  StoreSnapshot,
  StoreTransaction,
  StoreView,
} from './store.js';

/** One record a change touched, with the group it belongs to (groups: itself; API keys: none). */
export interface ChangedRecord {
  section: StoreSection;
  id: string;
  groupId: string | null;
}

export type RecordChangeListener = (changes: readonly ChangedRecord[]) => void;

/** A record as another replica changed it (`before`/`after` undefined where it did not exist). */
export interface ForeignChange {
  section: StoreSection;
  id: string;
  before: object | undefined;
  after: object | undefined;
}

function groupIdOf(section: StoreSection, id: string, record: object | undefined): string | null {
  if (section === 'groups') return id;
  if (section === 'apiKeys' || !record) return null;
  return (record as { groupId?: string }).groupId ?? null;
}

/**
 * A Store that says which records each change touched, for listeners that only need to know *that*
 * something changed (the admin console's live feed, admin sockets whose key is deleted): the
 * services' domain events name only what agents must act on, not enrollments, renames or keys.
 *
 * A change is announced when it is applied (its first run), and again if its outcome differs from
 * that: run again over another replica's newer state, or undone because its write failed. Changes
 * made by other replicas come in through `announceForeign`. Touches (last seen, last used) are not
 * announced, except host facts: connects and disconnects are the session registry's to tell.
 */
export class ObservedStore implements Store {
  private readonly listeners = new Set<RecordChangeListener>();

  constructor(private readonly inner: Store) {}

  /** Calls `listener` with the records each change touched; returns the function that stops it. */
  onChange(listener: RecordChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Announces records another replica changed, as its change feed brought them. */
  announceForeign(changes: readonly ForeignChange[]): void {
    this.announce(
      changes.map(({ section, id, before, after }) => ({
        section,
        id,
        groupId: groupIdOf(section, id, after ?? before),
      })),
    );
  }

  read<T>(fn: (view: StoreView) => T): T {
    return this.inner.read(fn);
  }

  transact<T>(fn: (tx: StoreTransaction) => T): Promise<T> {
    if (this.listeners.size === 0) return this.inner.transact(fn);
    let changed: ChangedRecord[] = [];
    let runs = 0;
    let applied = false;
    const durable = this.inner.transact((tx) => {
      runs++;
      changed = [];
      const result = fn(observedTransaction(tx, changed));
      applied = true;
      return result;
    });
    // The first run is applied synchronously (see Store.transact): announce it now.
    if (applied) this.announce(changed);
    const again = () => {
      if (runs > 1 || !applied) this.announce(changed);
    };
    durable.then(again, () => {
      if (applied) this.announce(changed);
    });
    return durable;
  }

  touch<S extends StoreSection>(section: S, id: string, fields: Partial<SectionRecords[S]>): boolean {
    const touched = this.inner.touch(section, id, fields);
    if (touched && section === 'connectors' && 'host' in fields) {
      const record = this.inner.read((view) => view.get('connectors', id));
      this.announce([{ section, id, groupId: record?.groupId ?? null }]);
    }
    return touched;
  }

  snapshot(): StoreSnapshot {
    return this.inner.snapshot();
  }

  caughtUp(): Promise<void> {
    return this.inner.caughtUp();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private announce(changes: readonly ChangedRecord[]): void {
    if (changes.length === 0) return;
    for (const listener of this.listeners) listener(changes);
  }
}

/** `tx`, noting in `changed` every record it puts, patches or deletes. */
function observedTransaction(tx: StoreTransaction, changed: ChangedRecord[]): StoreTransaction {
  const note = (section: StoreSection, id: string, record: object | undefined) =>
    changed.push({ section, id, groupId: groupIdOf(section, id, record) });
  return {
    get: (section, id) => tx.get(section, id),
    list: (section) => tx.list(section),
    put(section, record) {
      tx.put(section, record);
      note(section, record.id, record);
    },
    patch(section, id, fields) {
      const next = tx.patch(section, id, fields);
      note(section, id, next);
      return next;
    },
    delete(section, id) {
      const before = tx.get(section, id);
      const deleted = tx.delete(section, id);
      if (deleted) note(section, id, before);
      return deleted;
    },
  };
}
