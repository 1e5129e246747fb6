import { readFileSync, statSync } from 'node:fs';
import type { Adapter } from 'lowdb';
import { type FileSync, realSync, writeFileDurably } from '../../shared/private-files.js';
import type { StoreData } from './records.js';

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
  constructor(
    readonly file: string,
    private readonly sync: FileSync = realSync,
  ) {}

  async read(): Promise<StoreData | null> {
    const data = readDataFile(this.file);
    if (data) this.bytes = statSync(this.file).size;
    return data;
  }

  async write(data: StoreData): Promise<void> {
    const text = JSON.stringify(data);
    await writeFileDurably(this.file, text, { sync: this.sync });
    this.bytes = Buffer.byteLength(text);
  }
}

/** The data file's state; null when there is none. Throws DataFileError when it cannot be used. */
export function readDataFile(file: string): StoreData | null {
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
        'The server will not start over it: restore the data dir from a backup (connector-server restore --from <backup> --data-dir <new dir>). ' +
        'Moving the file away would not help: the server refuses a data dir whose store is missing, since every agent would find its connector unknown and wipe its identity.',
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
