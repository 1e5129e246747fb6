import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DomainError } from '../../shared/errors.js';
import { type FileSync, realSync, syncDir } from '../../shared/private-files.js';
import type { Clock } from '../clock.js';
import {
  type AuditReadOptions,
  listAuditEvents,
  matchesType,
  rotateAuditFiles,
} from '../store/audit-files.js';
import type { AuditEvent } from '../store/audit-records.js';
import { AuditCoalescer, type AuditCoalescerOptions } from './audit-coalescer.js';
import { randomId } from './secrets.js';

export type { AuditActor, AuditEvent } from '../store/audit-records.js';

export type AuditInput = Pick<AuditEvent, 'type' | 'actor'> &
  Partial<Omit<AuditEvent, 'id' | 'at' | 'type' | 'actor'>>;

export interface AuditFilter {
  since?: string | undefined;
  /** The id of the last event of the previous page: this page holds the events logged before it. */
  before?: string | undefined;
  limit?: number | undefined;
  type?: string | undefined;
}

/** How an event is written. */
export interface RecordOptions {
  /**
   * Written with the next write, or within `LAZY_AUDIT_FLUSH_MS`, instead of an fsync of its own:
   * for high-volume, low-stakes events (an agent connected) that a crash may lose the last moments
   * of. The promise still resolves only once the event is durable.
   */
  lazy?: boolean;
}

/** How long a lazy audit event may wait for a write to ride along with. */
export const LAZY_AUDIT_FLUSH_MS = 250;

/** Append-only record of admin mutations, enrollment attempts and session events. */
export interface AuditLog {
  /** Resolves once the event is durable. */
  record(input: AuditInput, options?: RecordOptions): Promise<AuditEvent>;
  /**
   * For refusals a stranger can repeat at will (a made-up key, a rate limit, a refused handshake):
   * the first of its type and reason from one address in a window is recorded like `record`, the
   * rest are counted into one summary event (see AuditCoalescer). Counted ones resolve at once.
   */
  recordRefusal(input: AuditInput): Promise<void>;
  /** Newest first; counts of refusals not yet written are written first. */
  list(filter?: AuditFilter): Promise<AuditEvent[]>;
  close(): Promise<void>;
}

export const DEFAULT_AUDIT_LIMIT = 100;
/** The size past which the audit file is rotated (`--audit-max-bytes`). */
export const DEFAULT_AUDIT_MAX_BYTES = 64 * 1024 * 1024;
/** Rotated audit files kept (`--audit-keep`). */
export const DEFAULT_AUDIT_KEEP = 10;

function complete(input: AuditInput, atMs: number): AuditEvent {
  return {
    id: randomId('evt'),
    at: new Date(atMs).toISOString(),
    outcome: 'success',
    reason: null,
    security: false,
    remoteAddress: null,
    groupId: null,
    connectorId: null,
    keyId: null,
    details: {},
    ...input,
  };
}

function select(events: AuditEvent[], filter: AuditFilter = {}): AuditEvent[] {
  const since = filter.since ? Date.parse(filter.since) : null;
  const limit = filter.limit ?? DEFAULT_AUDIT_LIMIT;
  const end = filter.before === undefined ? events.length : events.findIndex((e) => e.id === filter.before);
  const out: AuditEvent[] = [];
  for (const event of events.slice(0, Math.max(end, 0))) {
    if (since !== null && Date.parse(event.at) < since) continue;
    if (!matchesType(event, filter.type)) continue;
    out.push(event);
  }
  return out.reverse().slice(0, limit);
}

export class MemoryAuditLog implements AuditLog {
  readonly events: AuditEvent[] = [];
  private readonly refusals: AuditCoalescer;
  constructor(
    private readonly clock: Clock,
    refusals: AuditCoalescerOptions = {},
  ) {
    this.refusals = new AuditCoalescer((input) => this.record(input), clock, refusals);
  }
  async record(input: AuditInput): Promise<AuditEvent> {
    const event = complete(input, this.clock.now());
    this.events.push(event);
    return event;
  }
  recordRefusal(input: AuditInput): Promise<void> {
    return this.refusals.record(input);
  }
  async list(filter?: AuditFilter): Promise<AuditEvent[]> {
    await this.refusals.flush();
    return select(this.events, filter);
  }
  async close(): Promise<void> {
    await this.refusals.close();
  }
}

export interface FileAuditLogOptions {
  /** Told of every failed write: callers only see STORE_UNAVAILABLE, the log should say why. */
  onWriteError?: (error: unknown) => void;
  /** How refusals are coalesced (`recordRefusal`). */
  refusals?: AuditCoalescerOptions;
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
 * JSON lines appended to one file (mode 0600) beside the store. Appends are group-committed: lines
 * that arrive while an fsync runs go out together with the next one. Past `maxBytes` the file is
 * rotated (`<file>.1`, `.2` …, see audit-files.ts) between two writes, so every event is in exactly
 * one file. `at` never goes back in the file (a clock stepped back keeps the last time written until
 * it catches up): the order of the lines is the order of their times, which lets list() stop early.
 */
export class FileAuditLog implements AuditLog {
  private buffer: string[] = [];
  private waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private flushing: Promise<void> | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  /** A failed write may have left part of a line: the next write starts on a line of its own. */
  private torn = false;
  private readonly refusals: AuditCoalescer;
  private readonly maxBytes: number;
  private readonly keep: number;
  /** A rotation that failed is tried again once this much more is written (not on every write). */
  private rotateAtBytes: number;
  /** Counts rotations begun and ended: odd while one runs (see list()). */
  private rotationEpoch = 0;

  private constructor(
    private readonly file: string,
    private handle: FileHandle,
    private size: number,
    private lastAtMs: number,
    private readonly clock: Clock,
    private readonly options: FileAuditLogOptions,
  ) {
    this.maxBytes = options.maxBytes ?? DEFAULT_AUDIT_MAX_BYTES;
    this.keep = options.keep ?? DEFAULT_AUDIT_KEEP;
    if (!(this.maxBytes >= 1) || !Number.isInteger(this.keep) || this.keep < 1)
      throw new TypeError('FileAuditLog: maxBytes must be >= 1 and keep an integer >= 1');
    this.rotateAtBytes = this.maxBytes;
    this.refusals = new AuditCoalescer((input) => this.record(input), clock, options.refusals);
  }

  static async open(file: string, clock: Clock, options: FileAuditLogOptions = {}): Promise<FileAuditLog> {
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
      const lastAtMs = newest ? Date.parse(newest.at) : Number.NEGATIVE_INFINITY;
      return new FileAuditLog(file, handle, size, lastAtMs, clock, options);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  record(input: AuditInput, options: RecordOptions = {}): Promise<AuditEvent> {
    this.lastAtMs = Math.max(this.lastAtMs, this.clock.now());
    const event = complete(input, this.lastAtMs);
    this.buffer.push(`${JSON.stringify(event)}\n`);
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      if (options.lazy) this.flushLater();
      else this.flushSoon();
    }).then(() => event);
  }

  recordRefusal(input: AuditInput): Promise<void> {
    return this.refusals.record(input);
  }

  /** Starts writing what is buffered, unless a write is running (it takes the buffer next). */
  private flushSoon(): Promise<void> {
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.flushing ??= this.flushLoop().finally(() => {
      this.flushing = null;
      // An event that came after the loop's last look at the buffer, before this ran, found a write
      // under way and left itself to it: write it now.
      if (this.buffer.length > 0) void this.flushSoon();
    });
    return this.flushing;
  }

  private flushLater(): void {
    if (this.flushing || this.lazyTimer) return;
    this.lazyTimer = setTimeout(() => void this.flushSoon(), LAZY_AUDIT_FLUSH_MS);
    this.lazyTimer.unref();
  }

  private async flushLoop(): Promise<void> {
    while (this.buffer.length > 0) {
      const lines = this.buffer.join('');
      const waiters = this.waiters;
      this.buffer = [];
      this.waiters = [];
      try {
        // One write(2) may take only part of the buffer (a nearly full disk): write the rest, or
        // fail, but never acknowledge lines that are not all on disk.
        let pending = Buffer.from(this.torn ? `\n${lines}` : lines);
        while (pending.length > 0) {
          const { bytesWritten } = await this.handle.write(pending);
          this.size += bytesWritten;
          if (bytesWritten === 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
          pending = pending.subarray(bytesWritten);
        }
        await (this.options.sync ?? realSync).file(this.handle, this.file, true);
        this.torn = false;
        for (const w of waiters) w.resolve();
      } catch (error) {
        this.torn = true;
        this.options.onWriteError?.(error);
        const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        const failure = new DomainError('STORE_UNAVAILABLE', `The audit log could not be written (${code}).`);
        for (const w of waiters) w.reject(failure);
      }
      if (this.size >= this.rotateAtBytes) await this.rotate();
    }
  }

  /**
   * Moves the full file aside and starts a new one, between two writes. The folder is synced before
   * anything is written to the new file, so an acknowledged event never sits in a file whose name a
   * crash could lose. If it fails, appending goes on where it was (the events stay in order).
   */
  private async rotate(): Promise<void> {
    this.rotationEpoch++;
    try {
      const sync = this.options.sync ?? realSync;
      await rotateAuditFiles(this.file, this.keep, sync);
      const next = await openForAppend(this.file);
      try {
        await syncDir(dirname(this.file), sync);
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

  async list(filter?: AuditFilter): Promise<AuditEvent[]> {
    // A failed summary write is reported by onWriteError; the listing still shows the rest.
    await this.refusals.flush().catch(() => {});
    if (this.buffer.length > 0) await this.flushSoon().catch(() => {});
    await this.flushing;
    const { since, before, type, limit = DEFAULT_AUDIT_LIMIT } = filter ?? {};
    const page = { since, before, type, limit };
    // Files opened one by one as the page reaches them (a first page opens one) is right only if
    // no rotation renamed them meanwhile: this process is the only writer, so its count tells.
    const epoch = this.rotationEpoch;
    if (epoch % 2 === 0) {
      const events = await listAuditEvents(this.file, page, { ...this.options.read, lazy: true });
      if (this.rotationEpoch === epoch) return events;
    }
    return listAuditEvents(this.file, page, this.options.read);
  }

  async close(): Promise<void> {
    // Counts not yet written go out with the last write, so nothing counted is lost at shutdown.
    const summaries = this.refusals.close().catch(() => {});
    if (this.buffer.length > 0) await this.flushSoon().catch(() => {});
    await this.flushing;
    await summaries;
    await this.handle.close();
  }
}

function openForAppend(file: string): Promise<FileHandle> {
  return open(file, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND, 0o600);
}
