import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Low } from 'lowdb';
import { DomainError } from '../../shared/errors.js';
import { type FileSync, realSync } from '../../shared/private-files.js';
import { DataFileError, DurableJsonFile } from './data-file.js';
import { JournalFile, type JournalOp, journalFileOf, replayJournal } from './journal.js';
import { freezeRecords, RecordView, setRecord, Transaction, withFields } from './record-tables.js';
import { emptyData, type StoreData } from './records.js';
import { SECTIONS, type SectionRecords, type Store, type StoreSection, type StoreSnapshot } from './store.js';

export { DataFileError } from './data-file.js';
export { journalFileOf, loadStoreFiles } from './journal.js';

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** `before` of a record only touched so far: nothing to return to if the write fails. */
const TOUCHED = Symbol('touched');
interface Change {
  section: StoreSection;
  id: string;
  /** The record's durable value (undefined: it did not exist), or TOUCHED. */
  before: object | undefined | typeof TOUCHED;
  /** For a TOUCHED record: the fields touched, or null when the whole record must be written. */
  fields?: Set<string> | null;
}

/** The fields of two notes of one touched record together (null: the whole record). */
function unionFields(
  a: Set<string> | null | undefined,
  b: Set<string> | null | undefined,
): Set<string> | null {
  if (!a || !b) return null;
  return new Set([...a, ...b]);
}
const changeKey = (section: StoreSection, id: string) => `${section}\u0000${id}`;

export interface JournalStoreOptions {
  /** How long a `touch` may wait before it is written if no transaction writes it first. @default 5000 */
  lazyFlushMs?: number;
  /**
   * Journal size past which the data file is rewritten whole and the journal emptied, unless the
   * data file is bigger: then the journal may grow to its size. @default 8 MiB
   */
  compactAfterBytes?: number;
  /** Told about write failures; the store itself recovers by returning to the durable state. */
  onWriteError?: (error: unknown) => void;
  /**
   * Told when folding the journal into the data file at close fails: nothing is lost (the journal
   * keeps the changes and the next start reads it), unlike a failed write. @default onWriteError
   */
  onFoldError?: (error: unknown) => void;
  /** The fsync calls (a test observes their order through this). @default realSync */
  sync?: FileSync;
  /** Told when opening cut a torn last line off the journal (a crash mid-append: never acknowledged). */
  onTornTail?: (torn: { file: string; at: number; bytes: number }) => void;
}

/**
 * The default Store: a JSON data file (`store.json`) plus an append-only journal of changed records
 * (`store.journal`). lowdb's `Low` holds the state in memory and writes the data file through a
 * durable adapter; the journal is this store's own. A commit appends one line holding the records
 * its transactions changed and fdatasyncs it, so its cost follows the size of the change, not of
 * the whole state; the data file is rewritten whole (temp file, fsync, rename, fsync of the folder)
 * only when the journal has grown past a threshold, at start-up and at close. Commits are grouped:
 * while one is being written, every transaction that arrives waits for the next, which carries all
 * of them.
 *
 * Records are frozen and replaced, never changed in place, so the value a record had before a
 * commit window is simply the object it was: kept by reference to return to if the write fails. A
 * `touch` keeps none: its changes are loss-tolerant and never rolled back.
 */
export class JournalStore implements Store {
  private readonly pending: Waiter[] = [];
  private flushing: Promise<void> | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Records changed since the last commit began, with their value from before the first change. */
  private changed = new Map<string, Change>();
  /** The same for the commit being written, to return to if it fails. */
  private inFlight: Map<string, Change> | null = null;
  private readonly view: RecordView;
  /** Counters for tests and metrics: group commit shows as far fewer writes than transactions. */
  readonly stats = { transactions: 0, writes: 0, failedWrites: 0, compactions: 0 };

  private constructor(
    private readonly db: Low<StoreData>,
    private readonly adapter: DurableJsonFile,
    readonly file: string,
    private readonly journal: JournalFile,
    private readonly options: JournalStoreOptions,
  ) {
    this.view = new RecordView(db.data);
  }

  /** Opens (or creates) the data file and its journal. Throws DataFileError when they exist but cannot be used. */
  static async open(file: string, options: JournalStoreOptions = {}): Promise<JournalStore> {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const sync = options.sync ?? realSync;
    const adapter = new DurableJsonFile(file, sync);
    const db = new Low<StoreData>(adapter, emptyData());
    await db.read();
    if (!existsSync(file)) await db.write();
    const journalFile = journalFileOf(file);
    let text = '';
    try {
      text = await readFile(journalFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new DataFileError(journalFile, `cannot be read (${(error as Error).message})`);
      }
    }
    const { goodBytes } = replayJournal(journalFile, text, db.data);
    freezeRecords(db.data);
    const store = new JournalStore(db, adapter, file, new JournalFile(journalFile, goodBytes, sync), options);
    // A journal left by a crash is kept and appended to (folded in at the threshold or at close, as
    // usual): folding it in here stringified and rewrote the whole store while a restarted server's
    // fleet was waiting to reconnect (~0.8 s at 25k connectors). Only a torn last line is cut off.
    if (!existsSync(journalFile)) await store.compact();
    else if (goodBytes !== Buffer.byteLength(text)) {
      await store.journal.cut(goodBytes);
      options.onTornTail?.({ file: journalFile, at: goodBytes, bytes: Buffer.byteLength(text) - goodBytes });
    }
    return store;
  }

  read<T>(fn: (view: RecordView) => T): T {
    return fn(this.view);
  }

  transact<T>(fn: (tx: Transaction) => T): Promise<T> {
    if (this.closed) return Promise.reject(new DomainError('STORE_UNAVAILABLE', 'The store is closed.'));
    // The notes as they were before this transaction, to put back if it throws.
    const notesBefore = new Map<string, Change | undefined>();
    const tx = new Transaction(this.db.data, (section, id) => {
      const key = changeKey(section, id);
      if (!notesBefore.has(key)) notesBefore.set(key, this.changed.get(key));
      this.noteChange(section, id);
    });
    let result: T;
    try {
      result = fn(tx);
    } catch (error) {
      tx.rollback();
      for (const [key, note] of notesBefore) {
        if (note) this.changed.set(key, note);
        else this.changed.delete(key);
      }
      return Promise.reject(error);
    } finally {
      tx.end();
    }
    this.stats.transactions++;
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ resolve: () => resolve(result), reject });
      this.flushSoon();
    });
  }

  touch<S extends StoreSection>(section: S, id: string, fields: Partial<SectionRecords[S]>): boolean {
    const current = this.view.get(section, id);
    if (!current) return false;
    const next = withFields(current as SectionRecords[S], fields);
    if (!next) return true;
    this.noteTouch(section, id, fields);
    setRecord(this.db.data, section, id, next);
    if (this.lazyTimer || this.closed) return true;
    this.lazyTimer = setTimeout(() => {
      this.lazyTimer = null;
      this.flushSoon();
    }, this.options.lazyFlushMs ?? 5000);
    this.lazyTimer.unref();
    return true;
  }

  /**
   * References to every record now, in one cheap step (no copy of the whole state, which took 0.1 s
   * and more at 25k connectors): records are replaced, never changed, so those referenced keep the
   * values of this instant.
   */
  snapshot(): StoreSnapshot {
    return { sections: SECTIONS.map((section) => [section, this.view.list(section)]), release: () => {} };
  }

  /** Nothing to wait for: this process is the only writer (the data dir is locked). */
  async caughtUp(): Promise<void> {}

  async close(): Promise<void> {
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.closed = true;
    await this.flushing;
    await this.writeBatch([]);
    if (this.journal.bytes > 0 && !this.journal.suspect)
      await this.compact().catch((e) => (this.options.onFoldError ?? this.options.onWriteError)?.(e));
  }

  private flushSoon(): void {
    if (this.flushing) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = null;
      // A transaction that came after the loop's last look at `pending`, before this ran, found a
      // flush under way and left its commit to it: start the next one for it.
      if (this.pending.length > 0) this.flushSoon();
    });
  }

  private async flushLoop(): Promise<void> {
    let first = true;
    while (first || this.pending.length > 0) {
      first = false;
      await this.writeBatch(this.pending.splice(0));
    }
  }

  private async writeBatch(batch: Waiter[]): Promise<void> {
    const changes = this.changed;
    if (changes.size === 0 && !this.journal.suspect) {
      for (const waiter of batch) waiter.resolve();
      return;
    }
    this.changed = new Map();
    this.inFlight = changes;
    try {
      this.stats.writes++;
      if (this.journal.suspect || this.journal.bytes > this.compactionThreshold()) {
        await this.compact();
      } else {
        await this.journal.append(`${JSON.stringify({ ops: this.journalOps(changes) })}\n`);
      }
      this.inFlight = null;
      for (const waiter of batch) waiter.resolve();
    } catch (error) {
      this.rollBack(changes);
      const failed = [...batch, ...this.pending.splice(0)];
      this.options.onWriteError?.(error);
      const reason = new DomainError(
        'STORE_UNAVAILABLE',
        `The server could not save the change (${(error as NodeJS.ErrnoException).code ?? 'write failed'}); nothing was changed.`,
      );
      for (const waiter of failed) waiter.reject(reason);
    }
  }

  /** A journal line's ops: each changed record whole (null: deleted), or the fields a touch changed. */
  private journalOps(changes: Map<string, Change>): JournalOp[] {
    const ops: JournalOp[] = [];
    for (const { section, id, before, fields } of changes.values()) {
      const record = this.view.get(section, id) as Record<string, unknown> | undefined;
      if (before === TOUCHED && fields && record) {
        const patch: Record<string, unknown> = {};
        for (const field of fields) patch[field] = record[field];
        ops.push([section, id, patch, 1]);
      } else ops.push([section, id, record ?? null]);
    }
    return ops;
  }

  /**
   * Memory holds changes the disk does not: returns every changed record to its durable value
   * (newest changes first); the failing transactions and every one since are refused by the caller.
   */
  private rollBack(changes: Map<string, Change>): void {
    this.stats.failedWrites++;
    const touchedOnly = [...this.changed.values(), ...changes.values()].filter((c) => c.before === TOUCHED);
    for (const window of [this.changed, changes]) {
      for (const { section, id, before } of window.values())
        if (before !== TOUCHED) setRecord(this.db.data, section, id, before);
    }
    this.changed = new Map();
    this.inFlight = null;
    // Touched values stay in memory (they are never rolled back): keep them due for the next write.
    for (const change of touchedOnly) {
      const key = changeKey(change.section, change.id);
      const noted = this.changed.get(key);
      this.changed.set(key, noted ? { ...change, fields: unionFields(noted.fields, change.fields) } : change);
    }
  }

  /**
   * Rewriting the data file costs in proportion to its size (and stalls the event loop while it is
   * stringified: ~0.1–0.4 s at 25k connectors), so it waits until the journal is at least as big as
   * the data file: each journalled byte then costs at most one rewritten byte, at any store size.
   * A fixed 8 MiB meant a whole-store rewrite every ~8k connects of a 25k fleet.
   */
  private compactionThreshold(): number {
    return Math.max(this.options.compactAfterBytes ?? 8 * 1024 * 1024, this.adapter.bytes);
  }

  /** Rewrites the data file whole from memory, then empties the journal. */
  private async compact(): Promise<void> {
    await this.db.write();
    await this.journal.cut(0);
    this.stats.compactions++;
  }

  /**
   * Notes a transaction's first change of a record in this commit window, with the value to return
   * to if the write fails. A record changed by the commit being written is durable only once that
   * commit is: its value from before that commit is the one to return to. (Touched values in it are
   * not.) A record only touched so far returns to its value now, touches included.
   */
  private noteChange(section: StoreSection, id: string): void {
    const key = changeKey(section, id);
    const noted = this.changed.get(key);
    if (noted && noted.before !== TOUCHED) return;
    const inFlight = this.inFlight?.get(key);
    this.changed.set(key, {
      section,
      id,
      before: inFlight && inFlight.before !== TOUCHED ? inFlight.before : this.view.get(section, id),
    });
  }

  /** Notes a touch: only which fields changed, unless a transaction changed the record too. */
  private noteTouch(section: StoreSection, id: string, fields: object): void {
    const key = changeKey(section, id);
    const noted = this.changed.get(key);
    if (noted && noted.before !== TOUCHED) return;
    // A field set to undefined disappears from JSON: a patch cannot say that; write the record whole.
    const whole = Object.values(fields).includes(undefined);
    const names = Object.keys(fields);
    if (!noted)
      this.changed.set(key, { section, id, before: TOUCHED, fields: whole ? null : new Set(names) });
    else if (noted.fields && !whole) for (const name of names) noted.fields.add(name);
    else noted.fields = null;
  }
}
