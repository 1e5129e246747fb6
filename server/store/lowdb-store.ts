import { constants, existsSync, readFileSync, statSync } from 'node:fs';
import { type FileHandle, mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Adapter, Low } from 'lowdb';
import { DomainError } from '../../shared/errors.js';
import { writeFileDurably } from '../../shared/private-files.js';
import { emptyData, type StoreData } from './records.js';
import type { Store, StoreSnapshot } from './store.js';

/** The data file exists but cannot be used; start-up must stop rather than reset it. */
export class DataFileError extends Error {
  override readonly name = 'DataFileError';
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

/**
 * A lowdb adapter whose write is durable: temp file, fsync, rename over the old file, fsync of the
 * folder. steno (lowdb's own writer) renames but never fsyncs, so a power cut could lose an
 * acknowledged change or leave an empty file.
 */
export class DurableJsonFile implements Adapter<StoreData> {
  /** Bytes of the data file as last read or written. */
  bytes = 0;
  constructor(readonly file: string) {}

  async read(): Promise<StoreData | null> {
    const data = readDataFile(this.file);
    if (data) this.bytes = statSync(this.file).size;
    return data;
  }

  async write(data: StoreData): Promise<void> {
    const text = JSON.stringify(data);
    await writeFileDurably(this.file, text);
    this.bytes = Buffer.byteLength(text);
  }
}

function readDataFile(file: string): StoreData | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new DataFileError(file, `cannot be read (${(error as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new DataFileError(
      file,
      `is not valid JSON (${(error as Error).message}); it may be truncated or corrupted. ` +
        'The server will not start over it: restore the file from a backup or move it away.',
    );
  }
  return checkShape(file, parsed);
}

function checkShape(file: string, parsed: unknown): StoreData {
  const data = parsed as Partial<StoreData> | null;
  const isRecord = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isRecord(data) || data?.schemaVersion !== 1) {
    throw new DataFileError(file, 'is not a connector-enrollment data file (schemaVersion 1 expected)');
  }
  for (const part of ['groups', 'provisioningKeys', 'connectors', 'apiKeys'] as const) {
    if (!isRecord(data[part])) throw new DataFileError(file, `has no valid "${part}" section`);
  }
  return data as StoreData;
}

// The durable write (random temp name opened exclusively, never through a link) is shared with the
// agent; the server's other modules take it from here.
export { writeFileDurably };

/** The journal is never opened through a link planted at its name (no O_NOFOLLOW on Windows). */
const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

type Section = 'groups' | 'provisioningKeys' | 'connectors' | 'apiKeys';
const SECTIONS: readonly Section[] = ['groups', 'provisioningKeys', 'connectors', 'apiKeys'];
/**
 * One journalled change: the record's new value (null: deleted), or — with a trailing 1 — only the
 * fields a touch changed, merged into the record on replay. A connect touches three small fields of
 * a ~1 KB record: journalling them alone made the journal ~10× smaller on connect-heavy days, and
 * whole-store rewrites (compactions) as much rarer.
 */
type JournalOp = [Section, string, unknown] | [Section, string, Record<string, unknown>, 1];
/** `before` of a record only touched so far: nothing to return to if the write fails. */
const TOUCHED = Symbol('touched');
interface Change {
  section: Section;
  id: string;
  /** The record's durable value (undefined: it did not exist), or TOUCHED. */
  before: unknown;
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
const changeKey = (section: Section, id: string) => `${section}\u0000${id}`;

/** The journal beside a data file: `store.json` → `store.journal`. */
export function journalFileOf(file: string): string {
  return file.replace(/\.json$/, '') + '.journal';
}

/**
 * Replays journal text onto `data`. A last line without its newline is a torn append (a crash
 * mid-write) and is ignored; any other bad line means the file was damaged and stops start-up.
 * Returns how many bytes of the text are good and how many entries were applied.
 */
function replayJournal(file: string, text: string, data: StoreData): { goodBytes: number; entries: number } {
  let offset = 0;
  let entries = 0;
  while (offset < text.length) {
    const end = text.indexOf('\n', offset);
    if (end === -1) break;
    const line = text.slice(offset, end);
    let ops: JournalOp[];
    try {
      ops = (JSON.parse(line) as { ops: JournalOp[] }).ops;
      if (!Array.isArray(ops)) throw new Error('no ops');
    } catch {
      throw new DataFileError(
        file,
        `has a damaged entry at byte ${offset}; restore the data dir from a backup`,
      );
    }
    for (const [section, id, value, merge] of ops) {
      if (!SECTIONS.includes(section)) throw new DataFileError(file, `names an unknown section "${section}"`);
      if (merge === 1) {
        const record = (data[section] as Record<string, object | undefined>)[id];
        if (record && typeof value === 'object' && value !== null) Object.assign(record, value);
      } else if (value === null) delete data[section][id];
      else (data[section] as Record<string, unknown>)[id] = value;
    }
    entries++;
    offset = end + 1;
  }
  return { goodBytes: Buffer.byteLength(text.slice(0, offset)), entries };
}

/** The state a data file and its journal hold, read without opening a store: for tests and tools. */
export function loadStoreFiles(file: string): StoreData | null {
  const data = readDataFile(file);
  if (!data) return null;
  let text = '';
  try {
    text = readFileSync(journalFileOf(file), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  replayJournal(journalFileOf(file), text, data);
  return data;
}

export interface LowdbStoreOptions {
  /** How long a `touch` may wait before it is written if no transaction writes it first. @default 5000 */
  lazyFlushMs?: number;
  /**
   * Journal size past which the data file is rewritten whole and the journal emptied, unless the
   * data file is bigger: then the journal may grow to its size. @default 8 MiB
   */
  compactAfterBytes?: number;
  /** Told about write failures; the store itself recovers by returning to the durable state. */
  onWriteError?: (error: unknown) => void;
}

/**
 * The default Store: a lowdb JSON file (`store.json`) plus an append-only journal of changed
 * records (`store.journal`). A commit appends one line holding the records its transactions
 * changed and fsyncs it, so its cost follows the size of the change, not of the whole state; the
 * JSON file is rewritten whole (temp file, fsync, rename, fsync of the folder) only when the journal
 * has grown past a threshold, at start-up and at close. Commits are grouped: while one is being
 * written, every transaction that arrives waits for the next, which carries all of them.
 *
 * Changed records are found by handing transactions a view of the state whose records note their
 * first change (and keep the value from before it, to return to if the write fails). A `touch`
 * keeps no such copy: its changes are loss-tolerant and never rolled back, and copying every touched
 * record (each agent connect and disconnect touches one) was measurable CPU and garbage.
 */
export class LowdbStore implements Store {
  private readonly pending: Waiter[] = [];
  private flushing: Promise<void> | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Records changed since the last commit began, with their value from before the first change. */
  private changed = new Map<string, Change>();
  /** The same for the commit being written, to return to if it fails. */
  private inFlight: Map<string, Change> | null = null;
  private readonly view: StoreData;
  /** Views of the records changed in this commit window; renewed per window so they do not pile up. */
  private recordViews = new WeakMap<object, object>();
  /** True while a `touch` runs: its changes are noted without a copy to return to. */
  private touching = false;
  private journalBytes: number;
  /** Set when a failed append could not be cut back: the next commit rewrites the data file whole. */
  private journalSuspect = false;
  /**
   * Open snapshots, each with copies of the records changed since it was taken (made just before
   * their first change), keyed by the live record.
   */
  private readonly snapshots = new Set<Map<object, object>>();
  /** Counters for tests and metrics: group commit shows as far fewer writes than transactions. */
  readonly stats = { transactions: 0, writes: 0, failedWrites: 0, compactions: 0 };

  private constructor(
    private readonly db: Low<StoreData>,
    private readonly adapter: DurableJsonFile,
    readonly file: string,
    private readonly journalFile: string,
    journalBytes: number,
    private readonly options: LowdbStoreOptions,
  ) {
    this.journalBytes = journalBytes;
    this.view = this.makeView();
  }

  /** Opens (or creates) the data file and its journal. Throws DataFileError when they exist but cannot be used. */
  static async open(file: string, options: LowdbStoreOptions = {}): Promise<LowdbStore> {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const adapter = new DurableJsonFile(file);
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
    const store = new LowdbStore(db, adapter, file, journalFile, goodBytes, options);
    // A journal left by a crash is kept and appended to (folded in at the threshold or at close, as
    // usual): folding it in here stringified and rewrote the whole store while a restarted server's
    // fleet was waiting to reconnect (~0.8 s at 25k connectors). Only a torn last line is cut off.
    if (!existsSync(journalFile)) await store.compact();
    else if (goodBytes !== Buffer.byteLength(text)) await store.cutJournal(goodBytes);
    return store;
  }

  read<T>(fn: (data: Readonly<StoreData>) => T): T {
    return fn(this.db.data);
  }

  transact<T>(fn: (data: StoreData) => T): Promise<T> {
    if (this.closed) return Promise.reject(new DomainError('STORE_UNAVAILABLE', 'The store is closed.'));
    let result: T;
    try {
      result = fn(this.view);
    } catch (error) {
      return Promise.reject(error);
    }
    this.stats.transactions++;
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ resolve: () => resolve(result), reject });
      this.flushSoon();
    });
  }

  touch(fn: (data: StoreData) => void): void {
    this.touching = true;
    try {
      fn(this.view);
    } finally {
      this.touching = false;
    }
    if (this.lazyTimer || this.closed) return;
    this.lazyTimer = setTimeout(() => {
      this.lazyTimer = null;
      this.flushSoon();
    }, this.options.lazyFlushMs ?? 5000);
    this.lazyTimer.unref();
  }

  /**
   * References to every record now, in one cheap step (no copy of the whole state, which took
   * 0.1 s and more at 25k connectors); a record is copied only if it is changed in place while the
   * snapshot is open. Records replaced or deleted whole leave the referenced object as it was.
   */
  snapshot(): StoreSnapshot {
    const before = new Map<object, object>();
    this.snapshots.add(before);
    const raw = this.db.data;
    return {
      sections: SECTIONS.map((section) => [section, Object.values(raw[section] as Record<string, object>)]),
      asOfSnapshot: (record) => before.get(record) ?? record,
      release: () => {
        this.snapshots.delete(before);
      },
    };
  }

  async close(): Promise<void> {
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.closed = true;
    await this.flushing;
    await this.writeBatch([]);
    if (this.journalBytes > 0 && !this.journalSuspect)
      await this.compact().catch((e) => this.options.onWriteError?.(e));
  }

  private flushSoon(): void {
    if (this.flushing) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = null;
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
    if (changes.size === 0 && !this.journalSuspect) {
      for (const waiter of batch) waiter.resolve();
      return;
    }
    this.changed = new Map();
    this.inFlight = changes;
    this.recordViews = new WeakMap();
    const raw = this.db.data;
    const ops: JournalOp[] = [];
    for (const { section, id, before, fields } of changes.values()) {
      const record = raw[section][id] as Record<string, unknown> | undefined;
      if (before === TOUCHED && fields && record) {
        const patch: Record<string, unknown> = {};
        for (const field of fields) patch[field] = record[field];
        ops.push([section, id, patch, 1]);
      } else ops.push([section, id, record ?? null]);
    }
    try {
      this.stats.writes++;
      if (this.journalSuspect || this.journalBytes > this.compactionThreshold()) {
        await this.compact();
      } else {
        await this.append(`${JSON.stringify({ ops })}\n`);
      }
      this.inFlight = null;
      for (const waiter of batch) waiter.resolve();
    } catch (error) {
      // Memory holds changes the disk does not: return every changed record to its durable value
      // (newest changes first) and fail every transaction since, queued ones included.
      this.stats.failedWrites++;
      this.options.onWriteError?.(error);
      const touchedOnly = [...this.changed.values(), ...changes.values()].filter((c) => c.before === TOUCHED);
      this.restore(this.changed);
      this.restore(changes);
      this.changed = new Map();
      this.inFlight = null;
      // Touched values stay in memory (they are never rolled back): keep them due for the next write.
      for (const change of touchedOnly) {
        const key = changeKey(change.section, change.id);
        const noted = this.changed.get(key);
        this.changed.set(
          key,
          noted ? { ...change, fields: unionFields(noted.fields, change.fields) } : change,
        );
      }
      const failed = [...batch, ...this.pending.splice(0)];
      const reason = new DomainError(
        'STORE_UNAVAILABLE',
        `The server could not save the change (${(error as NodeJS.ErrnoException).code ?? 'write failed'}); nothing was changed.`,
      );
      for (const waiter of failed) waiter.reject(reason);
    }
  }

  /**
   * Appends one journal line in full, or cuts the journal back to where it was and throws. The file
   * is opened for each commit (an open costs little beside the fsync): a data dir that was removed
   * or went read-only fails the commit instead of writing to a file no restart will see.
   */
  private async append(line: string): Promise<void> {
    const bytes = Buffer.from(line);
    let handle: FileHandle | null = null;
    try {
      handle = await open(
        this.journalFile,
        constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | NOFOLLOW,
        0o600,
      );
      let written = 0;
      while (written < bytes.length) {
        const { bytesWritten } = await handle.write(bytes, written, bytes.length - written);
        if (bytesWritten === 0)
          throw Object.assign(new Error('no progress writing the journal'), { code: 'EIO' });
        written += bytesWritten;
      }
      await handle.datasync();
      this.journalBytes += bytes.length;
    } catch (error) {
      try {
        if (handle) await handle.truncate(this.journalBytes);
        else this.journalSuspect = true;
      } catch {
        this.journalSuspect = true;
      }
      throw error;
    } finally {
      await handle?.close().catch(() => {});
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

  /** Cuts the journal back to its first `bytes` (a torn last line) and makes that durable. */
  private async cutJournal(bytes: number): Promise<void> {
    const handle = await open(this.journalFile, constants.O_WRONLY | NOFOLLOW);
    try {
      await handle.truncate(bytes);
      await handle.datasync();
    } finally {
      await handle.close();
    }
  }

  /** Rewrites the data file whole from memory, then empties the journal. */
  private async compact(): Promise<void> {
    await this.db.write();
    const handle = await open(this.journalFile, constants.O_WRONLY | constants.O_CREAT | NOFOLLOW, 0o600);
    try {
      await handle.truncate(0);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    this.journalBytes = 0;
    this.journalSuspect = false;
    this.stats.compactions++;
  }

  private restore(changes: Map<string, Change>): void {
    const raw = this.db.data;
    for (const { section, id, before } of changes.values()) {
      if (before === TOUCHED) continue;
      if (before === undefined) delete raw[section][id];
      else (raw[section] as Record<string, unknown>)[id] = before;
    }
  }

  /**
   * Notes the first change of a record in this commit window, keeping its value from before (unless
   * a touch makes it: then only that it changed, until a transaction changes it too).
   */
  private noteChange(section: Section, id: string, field: string | null = null): void {
    // Before any early return: a snapshot taken between two changes of one commit window needs
    // the record as it was between them. Records change only in place through these views, and
    // their nested objects are replaced, never changed, so one level of copy keeps the old value.
    if (this.snapshots.size > 0) {
      const current = this.db.data[section][id];
      if (current)
        for (const before of this.snapshots) if (!before.has(current)) before.set(current, { ...current });
    }
    const key = changeKey(section, id);
    const noted = this.changed.get(key);
    if (noted && noted.before !== TOUCHED) return;
    if (this.touching) {
      if (!noted)
        this.changed.set(key, {
          section,
          id,
          before: TOUCHED,
          fields: field === null ? null : new Set([field]),
        });
      else if (noted.fields && field !== null) noted.fields.add(field);
      else noted.fields = null;
      return;
    }
    const current = this.db.data[section][id];
    // A record changed by the commit being written is durable only once that commit is: its
    // value from before that commit is the one to return to. (Touched values in it are not.)
    const inFlight = this.inFlight?.get(key);
    this.changed.set(key, {
      section,
      id,
      before:
        inFlight && inFlight.before !== TOUCHED
          ? inFlight.before
          : current === undefined
            ? undefined
            : structuredClone(current),
    });
  }

  private makeView(): StoreData {
    const raw = this.db.data;
    const store = this;
    const recordView = (section: Section, id: string, record: object): object => {
      const cached = this.recordViews.get(record);
      if (cached) return cached;
      const view = new Proxy(record, {
        set(target, property, value) {
          // Writing a field's own value again is no change: nothing to journal.
          if (Object.is(Reflect.get(target, property), value)) return true;
          store.noteChange(section, id, typeof property === 'string' ? property : null);
          return Reflect.set(target, property, value);
        },
        deleteProperty(target, property) {
          store.noteChange(section, id);
          return Reflect.deleteProperty(target, property);
        },
      });
      this.recordViews.set(record, view);
      return view;
    };
    const sectionViews = Object.fromEntries(
      SECTIONS.map((section) => [
        section,
        new Proxy(raw[section] as Record<string, object>, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver);
            if (typeof property !== 'string' || typeof value !== 'object' || value === null) return value;
            return recordView(section, property, value);
          },
          set(target, property, value) {
            if (typeof property === 'string') store.noteChange(section, property);
            return Reflect.set(target, property, value);
          },
          deleteProperty(target, property) {
            if (typeof property === 'string') store.noteChange(section, property);
            return Reflect.deleteProperty(target, property);
          },
        }),
      ]),
    ) as unknown as Pick<StoreData, Section>;
    return new Proxy(raw, {
      get(target, property, receiver) {
        if (typeof property === 'string' && (SECTIONS as readonly string[]).includes(property)) {
          return sectionViews[property as Section];
        }
        return Reflect.get(target, property, receiver);
      },
      set() {
        throw new TypeError('transactions change records, not the sections of the store');
      },
    });
  }
}
