import { constants, existsSync, readFileSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Adapter, Low } from 'lowdb';
import { DomainError } from '../../shared/errors.js';
import { emptyData, type StoreData } from './records.js';
import type { Store } from './store.js';

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
  /** The text last known to be on disk: what the state returns to when a write fails. */
  lastDurableText: string | null = null;

  constructor(readonly file: string) {}

  async read(): Promise<StoreData | null> {
    const data = readDataFile(this.file);
    this.lastDurableText = data ? JSON.stringify(data) : null;
    return data;
  }

  async write(data: StoreData): Promise<void> {
    const text = JSON.stringify(data);
    await writeFileDurably(this.file, text);
    this.lastDurableText = text;
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

/** Writes `text` to `file` so that after it resolves the content survives a crash or power cut. */
export async function writeFileDurably(file: string, text: string, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw error;
  }
  await handle.close();
  try {
    await rename(tmp, file);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
  const dir = await open(dirname(file), constants.O_RDONLY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

export interface LowdbStoreOptions {
  /** How long a `touch` may wait before it is written if no transaction writes it first. @default 5000 */
  lazyFlushMs?: number;
  /** Told about write failures; the store itself recovers by reloading the file. */
  onWriteError?: (error: unknown) => void;
}

/**
 * The default Store: one JSON file written through lowdb, with group commit. While one write is in
 * flight, every transaction that arrives waits for the next one, which carries all of them: the
 * number of writes tracks disk speed, not request rate, so throughput holds as the file grows.
 */
export class LowdbStore implements Store {
  private readonly pending: Waiter[] = [];
  private flushing: Promise<void> | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Counters for tests and metrics: group commit shows as far fewer writes than transactions. */
  readonly stats = { transactions: 0, writes: 0, failedWrites: 0 };

  private constructor(
    private readonly db: Low<StoreData>,
    private readonly adapter: DurableJsonFile,
    readonly file: string,
    private readonly options: LowdbStoreOptions,
  ) {}

  /** Opens (or creates) the data file. Throws DataFileError when it exists but cannot be used. */
  static async open(file: string, options: LowdbStoreOptions = {}): Promise<LowdbStore> {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const adapter = new DurableJsonFile(file);
    const db = new Low<StoreData>(adapter, emptyData());
    await db.read();
    const store = new LowdbStore(db, adapter, file, options);
    if (!existsSync(file)) await db.write();
    return store;
  }

  read<T>(fn: (data: Readonly<StoreData>) => T): T {
    return fn(this.db.data);
  }

  transact<T>(fn: (data: StoreData) => T): Promise<T> {
    if (this.closed) return Promise.reject(new DomainError('STORE_UNAVAILABLE', 'The store is closed.'));
    let result: T;
    try {
      result = fn(this.db.data);
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
    fn(this.db.data);
    if (this.lazyTimer || this.closed) return;
    this.lazyTimer = setTimeout(() => {
      this.lazyTimer = null;
      this.flushSoon();
    }, this.options.lazyFlushMs ?? 5000);
    this.lazyTimer.unref();
  }

  async close(): Promise<void> {
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.closed = true;
    await this.flushing;
    await this.writeBatch([]);
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
    try {
      this.stats.writes++;
      await this.db.write();
      for (const waiter of batch) waiter.resolve();
    } catch (error) {
      // Memory now holds changes the disk does not: go back to the disk's state and fail every
      // change made since, including those queued for the next write.
      const failed = [...batch, ...this.pending.splice(0)];
      this.stats.failedWrites++;
      this.options.onWriteError?.(error);
      const durable = this.adapter.lastDurableText;
      this.db.data = durable ? (JSON.parse(durable) as StoreData) : emptyData();
      const reason = new DomainError(
        'STORE_UNAVAILABLE',
        `The server could not save the change (${(error as NodeJS.ErrnoException).code ?? 'write failed'}); nothing was changed.`,
      );
      for (const waiter of failed) waiter.reject(reason);
    }
  }
}
