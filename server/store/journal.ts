import { constants, readFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { type FileSync, realSync } from '../../shared/private-files.js';
import { DataFileError, readDataFile } from './data-file.js';
import type { StoreData } from './records.js';
import { SECTIONS, type StoreSection } from './store.js';

// The journal: one line per commit, `{"ops":[...]}`, appended and fdatasynced. Replayed onto the
// data file at start-up; emptied when the data file is rewritten whole.

/**
 * One journalled change: the record's new value (null: deleted), or — with a trailing 1 — only the
 * fields a touch changed, merged into the record on replay. A connect touches three small fields of
 * a ~1 KB record: journalling them alone made the journal ~10× smaller on connect-heavy days, and
 * whole-store rewrites (compactions) as much rarer.
 */
export type JournalOp = [StoreSection, string, unknown] | [StoreSection, string, Record<string, unknown>, 1];

/** The journal is never opened through a link planted at its name (no O_NOFOLLOW on Windows). */
const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

/** The journal beside a data file: `store.json` → `store.journal`. */
export function journalFileOf(file: string): string {
  return file.replace(/\.json$/, '') + '.journal';
}

/**
 * Replays journal text onto `data`. A last line without its newline is a torn append (a crash
 * mid-write) and is ignored; any other bad line means the file was damaged and stops start-up.
 * Returns how many bytes of the text are good and how many entries were applied.
 */
export function replayJournal(
  file: string,
  text: string,
  data: StoreData,
): { goodBytes: number; entries: number } {
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
      // The last line alone: most likely an append a crash tore before its fdatasync returned (never
      // acknowledged), but a damaged disk looks the same, so the operator decides, told how.
      const last = end === text.length - 1;
      const at = Buffer.byteLength(text.slice(0, offset));
      throw new DataFileError(
        file,
        last
          ? `has a damaged last entry at byte ${at} (a commit a crash tore, or a damaged disk). ` +
              `To start without that one change: truncate -s ${at} ${file} (keep a copy first); or restore the data dir from a backup`
          : `has a damaged entry at byte ${at}, with more after it; restore the data dir from a backup`,
      );
    }
    for (const [section, id, value, merge] of ops) {
      if (!SECTIONS.includes(section)) throw new DataFileError(file, `names an unknown section "${section}"`);
      const table = data[section] as Record<string, unknown>;
      if (merge === 1) {
        const record = table[id];
        if (record && typeof value === 'object' && value !== null) Object.assign(record, value);
      } else if (value === null) delete table[id];
      else table[id] = value;
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

/** The journal file's writes: whole appends, cuts, emptying; each durable before it resolves. */
export class JournalFile {
  constructor(
    readonly file: string,
    /** Bytes of whole lines the file holds. */
    public bytes: number,
    private readonly sync: FileSync = realSync,
  ) {}

  /** Set when a failed append could not be cut back: only a rewrite of the data file is safe then. */
  suspect = false;

  /**
   * Appends one line in full, or cuts the file back to where it was and throws (setting `suspect`
   * when it could not).
   * The file is opened for each commit (an open costs little beside the fdatasync): a data dir that
   * was removed or went read-only fails the commit instead of writing to a file no restart will see.
   */
  async append(line: string): Promise<void> {
    const bytes = Buffer.from(line);
    let handle: FileHandle | null = null;
    try {
      handle = await open(
        this.file,
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
      await this.sync.file(handle, this.file, true);
      this.bytes += bytes.length;
    } catch (error) {
      try {
        if (handle) await handle.truncate(this.bytes);
        else this.suspect = true;
      } catch {
        this.suspect = true;
      }
      throw error;
    } finally {
      await handle?.close().catch(() => {});
    }
  }

  /** Cuts the file to `bytes` (0: empties it, creating it if need be) and makes that durable. */
  async cut(bytes: number): Promise<void> {
    const handle = await open(this.file, constants.O_WRONLY | constants.O_CREAT | NOFOLLOW, 0o600);
    try {
      await handle.truncate(bytes);
      await this.sync.file(handle, this.file, true);
    } finally {
      await handle.close();
    }
    this.bytes = bytes;
    if (bytes === 0) this.suspect = false;
  }
}
