import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type FileSync, realSync, syncDir } from '../../shared/private-files.js';
import {
  type AuditPageFilter,
  type AuditReadOptions,
  listAuditEvents,
  rotateAuditFiles,
} from './audit-files.js';
import type { AuditEvent } from './audit-records.js';
import {
  AuditRetry,
  auditWriteFailure,
  DEFAULT_MAX_HELD_AUDIT_EVENTS,
  type HeldAuditOptions,
} from './held-audit.js';

/** How long a lazy audit line may wait for a write to ride along with. */
export const LAZY_AUDIT_FLUSH_MS = 250;
/** The size past which the audit file is rotated (`--audit-max-bytes`). */
export const DEFAULT_AUDIT_MAX_BYTES = 64 * 1024 * 1024;
/** Rotated audit files kept (`--audit-keep`). */
export const DEFAULT_AUDIT_KEEP = 10;

export interface AuditFileOptions extends HeldAuditOptions {
  /** Past this size the file is rotated to `<file>.1`. @default DEFAULT_AUDIT_MAX_BYTES */
  maxBytes?: number;
  /** Rotated files kept (`<file>.1` … `<file>.<keep>`); older ones are removed. @default DEFAULT_AUDIT_KEEP */
  keep?: number;
  /** How list() reads the files (tests count the bytes read). */
  read?: AuditReadOptions;
  /** The fsync calls (a test observes their order through this). @default realSync */
  sync?: FileSync;
}

/**
 * The audit log's file: JSON lines appended to one file (mode 0600) beside the store. Appends are
 * group-committed: lines that arrive while an fsync runs go out together with the next one. Past
 * `maxBytes` the file is rotated (`<file>.1`, `.2` …, see audit-files.ts) between two writes, so
 * every line is in exactly one file.
 *
 * A write that fails (a full disk) is cut back off the file and its lines are held (see
 * held-audit.ts): they go out first with the next write, or the next retry, so the file keeps the
 * order of the events' times and loses none of them while the process lives.
 */
export class AuditFile {
  private buffer: string[] = [];
  private waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private flushing: Promise<void> | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  /** A failed write that could not be cut back may have left part of a line: the next write starts on a line of its own. */
  private torn = false;
  /** Lines a failed write did not get on disk, oldest first: written before anything newer. */
  private held: string[] = [];
  private heldSinceMs = 0;
  private dropped = 0;
  private readonly maxHeld: number;
  private readonly retry = new AuditRetry(() => void this.flushSoon());
  private readonly maxBytes: number;
  private readonly keep: number;
  private readonly sync: FileSync;
  /** A rotation that failed is tried again once this much more is written (not on every write). */
  private rotateAtBytes: number;
  /** Counts rotations begun and ended: odd while one runs (see list()). */
  private rotationEpoch = 0;

  private constructor(
    private readonly file: string,
    private handle: FileHandle,
    private size: number,
    /** The time of the newest event in the files when opened (-Infinity: none). */
    readonly newestAtMs: number,
    private readonly options: AuditFileOptions,
  ) {
    this.maxBytes = options.maxBytes ?? DEFAULT_AUDIT_MAX_BYTES;
    this.keep = options.keep ?? DEFAULT_AUDIT_KEEP;
    this.sync = options.sync ?? realSync;
    this.maxHeld = options.maxHeldEvents ?? DEFAULT_MAX_HELD_AUDIT_EVENTS;
    if (!(this.maxBytes >= 1) || !Number.isInteger(this.keep) || this.keep < 1)
      throw new TypeError('FileAuditLog: maxBytes must be >= 1 and keep an integer >= 1');
    this.rotateAtBytes = this.maxBytes;
  }

  static async open(file: string, options: AuditFileOptions = {}): Promise<AuditFile> {
    const handle = await openForAppend(file);
    try {
      // A crash mid-append can leave a last line without its newline: end it, so the next event
      // starts a line of its own instead of being glued to the torn one.
      let { size } = await handle.stat();
      if (size > 0) {
        const last = Buffer.alloc(1);
        await handle.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) size += (await handle.write('\n')).bytesWritten;
      }
      const [newest] = await listAuditEvents(file, { limit: 1 }, options.read);
      const newestAtMs = newest ? Date.parse(newest.at) : Number.NEGATIVE_INFINITY;
      return new AuditFile(file, handle, size, newestAtMs, options);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Resolves once `line` is durable; a lazy one waits up to LAZY_AUDIT_FLUSH_MS for a write to ride along with. */
  append(line: string, lazy = false): Promise<void> {
    this.buffer.push(line);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (lazy) this.flushLater();
      else void this.flushSoon();
    });
  }

  /** Starts writing what is buffered, unless a write is running (it takes the buffer next). */
  private flushSoon(): Promise<void> {
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.flushing ??= this.flushLoop().finally(() => {
      this.flushing = null;
      // An event that came after the loop's last look at the buffer, before this ran, found a write
      // under way and left itself to it: write it now (while lines are held, the retry does).
      if (this.buffer.length > 0 && this.held.length === 0) void this.flushSoon();
    });
    return this.flushing;
  }

  private flushLater(): void {
    if (this.flushing || this.lazyTimer) return;
    this.lazyTimer = setTimeout(() => void this.flushSoon(), LAZY_AUDIT_FLUSH_MS);
    this.lazyTimer.unref();
  }

  private async flushLoop(): Promise<void> {
    while (this.buffer.length > 0 || this.held.length > 0) {
      const fresh = this.buffer;
      const waiters = this.waiters;
      this.buffer = [];
      this.waiters = [];
      const lines = this.held.length > 0 ? [...this.held, ...fresh] : fresh;
      const sizeBefore = this.size;
      try {
        await this.writeAll(lines.join(''));
        await this.sync.file(this.handle, this.file, true);
        this.torn = false;
        this.retry.reset();
        if (this.held.length > 0) this.recovered();
        for (const w of waiters) w.resolve();
      } catch (error) {
        await this.cutBack(sizeBefore);
        if (this.held.length === 0) {
          this.heldSinceMs = Date.now();
          this.options.onWriteError?.(error);
        }
        this.hold(lines);
        const failure = auditWriteFailure(error);
        for (const w of waiters) w.reject(failure);
        // Whatever comes meanwhile would fail the same way: the retry (or an urgent event) goes on.
        this.retry.schedule();
        return;
      }
      if (this.size >= this.rotateAtBytes) await this.rotate();
    }
  }

  /** One write(2) may take only part of the text (a nearly full disk): write the rest, or fail. */
  private async writeAll(text: string): Promise<void> {
    let pending = Buffer.from(this.torn ? `\n${text}` : text);
    while (pending.length > 0) {
      const { bytesWritten } = await this.handle.write(pending);
      this.size += bytesWritten;
      if (bytesWritten === 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
      pending = pending.subarray(bytesWritten);
    }
  }

  /** Takes a failed write's bytes back off the file, so no torn line stays between two events. */
  private async cutBack(size: number): Promise<void> {
    if (this.size === size) return;
    try {
      await this.handle.truncate(size);
      this.size = size;
    } catch {
      this.torn = true;
    }
  }

  /** Keeps `lines` for the next write; past the bound the oldest go (counted, and told at recovery). */
  private hold(lines: string[]): void {
    const over = lines.length - this.maxHeld;
    if (over > 0) this.dropped += over;
    this.held = over > 0 ? lines.slice(over) : lines;
  }

  private recovered(): void {
    const recovery = { written: this.held.length, dropped: this.dropped, sinceMs: this.heldSinceMs };
    this.held = [];
    this.dropped = 0;
    this.options.onRecovered?.(recovery);
  }

  /**
   * Moves the full file aside and starts a new one, between two writes. The folder is synced before
   * anything is written to the new file, so an acknowledged event never sits in a file whose name a
   * crash could lose. If it fails, appending goes on where it was (the events stay in order).
   */
  private async rotate(): Promise<void> {
    this.rotationEpoch++;
    try {
      await rotateAuditFiles(this.file, this.keep, this.sync);
      const next = await openForAppend(this.file);
      try {
        await syncDir(dirname(this.file), this.sync);
      } catch (error) {
        await next.close();
        throw error;
      }
      const full = this.handle;
      this.handle = next;
      this.size = 0;
      this.torn = false;
      this.rotateAtBytes = this.maxBytes;
      await full.close().catch(() => {});
    } catch (error) {
      this.options.onWriteError?.(error);
      this.rotateAtBytes = this.size + Math.max(1, Math.floor(this.maxBytes / 8));
    } finally {
      this.rotationEpoch++;
    }
  }

  /** A page of events, newest first, with every line appended so far included. */
  async list(page: AuditPageFilter): Promise<AuditEvent[]> {
    if (this.buffer.length > 0) await this.flushSoon().catch(() => {});
    await this.flushing;
    // Files opened one by one as the page reaches them (a first page opens one) is right only if
    // no rotation renamed them meanwhile: this process is the only writer, so its count tells.
    const epoch = this.rotationEpoch;
    if (epoch % 2 === 0) {
      const events = await listAuditEvents(this.file, page, { ...this.options.read, lazy: true });
      if (this.rotationEpoch === epoch) return events;
    }
    return listAuditEvents(this.file, page, this.options.read);
  }

  /** Writes what is buffered (and held) and closes the file; what still cannot be written is told to onLost. */
  async close(): Promise<void> {
    if (this.buffer.length > 0 || this.held.length > 0) await this.flushSoon().catch(() => {});
    await this.flushing;
    this.retry.reset();
    const lost = this.held.length + this.dropped;
    if (lost > 0) this.options.onLost?.(lost);
    await this.handle.close();
  }
}

function openForAppend(file: string): Promise<FileHandle> {
  return open(file, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND, 0o600);
}
