import type pg from 'pg';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { AuditFile, type AuditFileOptions } from '../store/audit-file.js';
import { matchesType } from '../store/audit-files.js';
import type { AuditEvent, AuditSink } from '../store/audit-records.js';
import type { HeldAuditOptions, HeldAuditRecovery } from '../store/held-audit.js';
import { type AuditRetention, AuditTable, type AuditTableOptions } from '../store/postgres/audit-table.js';
import { AuditCoalescer, type AuditCoalescerOptions } from './audit-coalescer.js';
import { unlessAuditNotWritten } from './once-saved.js';
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
  /** Only events whose `security` flag is this (see AuditEvent.security). */
  security?: boolean | undefined;
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

export { DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES, LAZY_AUDIT_FLUSH_MS } from '../store/audit-file.js';

/** Append-only record of admin mutations, enrollment attempts and session events. */
export interface AuditLog {
  /** Resolves once the event is durable. */
  record(input: AuditInput, options?: RecordOptions): Promise<AuditEvent>;
  /**
   * For refusals a stranger can repeat at will (a made-up key, a rate limit, a refused handshake):
   * the first of its type and reason from one address in a window is recorded like `record`, the
   * rest are counted into one summary event (see AuditCoalescer). Counted ones resolve at once.
   * An event the audit log cannot write yet does not fail it (it is held, or its loss is logged):
   * the refusal itself is the caller's answer, which "the change was saved" would falsify.
   */
  recordRefusal(input: AuditInput): Promise<void>;
  /** Newest first; counts of refusals not yet written are written first. */
  list(filter?: AuditFilter): Promise<AuditEvent[]>;
  close(): Promise<void>;
}

export const DEFAULT_AUDIT_LIMIT = 100;

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
    if (filter.security !== undefined && event.security !== filter.security) continue;
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

/** How refusals are coalesced (`recordRefusal`). */
export interface DurableAuditLogOptions {
  refusals?: AuditCoalescerOptions;
}

/** What the server's log says while the audit log cannot be written, and after (see held-audit.ts). */
export function auditOutageLogging(logger: Logger): Pick<HeldAuditOptions, 'onRecovered' | 'onLost'> {
  return {
    onRecovered: ({ written, dropped, sinceMs }) =>
      (dropped > 0 ? logger.error.bind(logger) : logger.info.bind(logger))(
        { written, dropped, outageMs: Date.now() - sinceMs },
        dropped > 0
          ? `audit log written again, but ${dropped} event(s) were dropped while it could not be (more than the server holds in memory); audited as audit.events_dropped`
          : `audit log written again: ${written} event(s) held in memory meanwhile are in it`,
      ),
    onLost: (count) =>
      logger.error(
        { lost: count },
        `${count} audit event(s) could not be written (the storage still refused them) and are lost`,
      ),
  };
}

/** Records, once held events are written again, how many were dropped meanwhile (if any). */
function recordingDrops(options: HeldAuditOptions, log: () => AuditLog): HeldAuditOptions {
  return {
    ...options,
    onRecovered: (recovery: HeldAuditRecovery) => {
      options.onRecovered?.(recovery);
      if (recovery.dropped === 0) return;
      log()
        .record({
          type: 'audit.events_dropped',
          actor: { kind: 'system' },
          security: true,
          details: { dropped: recovery.dropped, written: recovery.written },
        })
        .catch(() => {}); // a write that fails again is held and told like any other
    },
  };
}

export interface FileAuditLogOptions extends AuditFileOptions, DurableAuditLogOptions {}

/**
 * An audit log over a durable sink (a file, a table). `at` never goes back within one log (a clock
 * stepped back keeps the last time written until it catches up): in the file, the order of the lines
 * is then the order of their times, which lets list() stop early.
 */
class DurableAuditLog implements AuditLog {
  private readonly refusals: AuditCoalescer;

  protected constructor(
    private readonly sink: AuditSink,
    private lastAtMs: number,
    private readonly clock: Clock,
    options: DurableAuditLogOptions,
  ) {
    this.refusals = new AuditCoalescer((input) => this.record(input), clock, options.refusals);
  }

  record(input: AuditInput, options: RecordOptions = {}): Promise<AuditEvent> {
    this.lastAtMs = Math.max(this.lastAtMs, this.clock.now());
    const event = complete(input, this.lastAtMs);
    return this.sink.append(event, options.lazy ?? false).then(() => event);
  }

  recordRefusal(input: AuditInput): Promise<void> {
    return this.refusals.record(input).catch(unlessAuditNotWritten);
  }

  async list(filter?: AuditFilter): Promise<AuditEvent[]> {
    // A failed summary write is reported by onWriteError; the listing still shows the rest.
    await this.refusals.flush().catch(() => {});
    const { since, before, type, security, limit = DEFAULT_AUDIT_LIMIT } = filter ?? {};
    return this.sink.list({ since, before, type, security, limit });
  }

  async close(): Promise<void> {
    // Counts not yet written go out with the last write, so nothing counted is lost at shutdown.
    await this.refusals.close().catch(() => {});
    await this.sink.close();
  }
}

/** The audit log kept in a file beside the store (see AuditFile): one server process. */
export class FileAuditLog extends DurableAuditLog {
  static async open(file: string, clock: Clock, options: FileAuditLogOptions = {}): Promise<FileAuditLog> {
    let log: FileAuditLog | undefined;
    const audit = await AuditFile.open(
      file,
      recordingDrops(options, () => log as FileAuditLog),
    );
    const sink: AuditSink = {
      append: (event, lazy) => audit.append(`${JSON.stringify(event)}\n`, lazy),
      list: (page) => audit.list(page),
      close: () => audit.close(),
    };
    log = new FileAuditLog(sink, audit.newestAtMs, clock, options);
    return log;
  }
}

/**
 * The audit log kept in PostgreSQL (see AuditTable), shared by the replicas: any replica lists
 * what all of them recorded. Each replica's times never go back; across replicas the order is
 * their clocks' (pages follow `at`, then the order rows were inserted).
 */
export class TableAuditLog extends DurableAuditLog {
  private constructor(
    private readonly table: AuditTable,
    clock: Clock,
    options: DurableAuditLogOptions,
  ) {
    super(table, Number.NEGATIVE_INFINITY, clock, options);
  }

  /** Removes events past `retention` (one replica at a time; null: another one is at it). */
  prune(retention: AuditRetention, nowMs: number): Promise<number | null> {
    return this.table.prune(retention, nowMs);
  }

  /** Over `pool` (the caller's: close() leaves it open); the schema must be migrated. */
  static create(pool: pg.Pool, clock: Clock, options: AuditTableOptions & DurableAuditLogOptions = {}) {
    let log: TableAuditLog | undefined;
    const table = new AuditTable(
      pool,
      recordingDrops(options, () => log as TableAuditLog),
    );
    log = new TableAuditLog(table, clock, options);
    return log;
  }
}
