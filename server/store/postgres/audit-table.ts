import type pg from 'pg';
import { LAZY_AUDIT_FLUSH_MS } from '../audit-file.js';
import type { AuditEvent, AuditPageFilter, AuditSink } from '../audit-records.js';
import {
  AuditRetry,
  auditWriteFailure,
  DEFAULT_MAX_HELD_AUDIT_EVENTS,
  type HeldAuditOptions,
} from '../held-audit.js';
import { checkOut } from './checked-out.js';
import { boundedRead } from './connect.js';

/** Rows one INSERT carries at most (a burst larger than this goes out in several, in order). */
export const AUDIT_INSERT_MAX_ROWS = 5000;
/** Rows one retention DELETE removes: each is a short transaction, so writers never wait long. */
export const AUDIT_PRUNE_BATCH_ROWS = 10_000;
/** A retention run stops after this many batches (10M rows); the next run goes on. */
const AUDIT_PRUNE_MAX_BATCHES = 1000;
/** The advisory lock one replica holds while it prunes (others skip their turn). */
const AUDIT_PRUNE_LOCK = '418581342580'; // 0x6175646974, "audit"

/**
 * Writes `events` as rows of `audit_events` in one statement, in their order (arrays unnested, so the
 * statement's size does not grow with the rows): the table's appends, and an import's copy of a file
 * log (through its transaction's client).
 */
export async function insertAuditEvents(
  db: pg.Pool | pg.ClientBase,
  events: readonly AuditEvent[],
  { again = false }: { again?: boolean } = {},
): Promise<void> {
  // WITH ORDINALITY … ORDER BY: the rows take their `seq` in the order they were recorded. Sent
  // `again` (events held after a failure the database may have committed before the link broke),
  // the rows already there are skipped.
  await db.query(
    `INSERT INTO audit_events (event_id, at, type, security, body)
     SELECT e, a, t, s, b::jsonb
     FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::boolean[], $5::text[])
       WITH ORDINALITY AS u(e, a, t, s, b, n)
     ORDER BY n${again ? '\n     ON CONFLICT (event_id) DO NOTHING' : ''}`,
    [
      events.map((e) => e.id),
      events.map((e) => e.at),
      events.map((e) => e.type),
      events.map((e) => e.security),
      events.map((e) => JSON.stringify(e)),
    ],
  );
}

/** How much of the audit table to keep; events past either bound are removed by `prune`. */
export interface AuditRetention {
  /** Events older than this (by `at`) go. */
  maxAgeMs?: number | undefined;
  /** Only this many newest events stay. */
  maxRows?: number | undefined;
}

export interface AuditTableOptions extends HeldAuditOptions {}

interface Pending {
  event: AuditEvent;
  lazy: boolean;
  resolve: () => void;
  reject: (error: unknown) => void;
}

const settled = () => {};

/**
 * The audit log in PostgreSQL (`audit_events`), shared by every replica. Appends are
 * group-committed like the file's: events that arrive while an INSERT runs go out together in the
 * next one, one statement for many rows (arrays unnested, so the statement's size does not grow with
 * the rows), and each resolves once that INSERT committed. Pages follow (at, seq) newest first, so
 * events with the same time keep one order on every replica and across pages. Events an INSERT
 * failed to write are held and sent again (see held-audit.ts), unless the database refused their
 * data itself (a data or integrity error, which no retry mends).
 */
export class AuditTable implements AuditSink {
  private pending: Pending[] = [];
  private flushing: Promise<void> | null = null;
  private lazyTimer: NodeJS.Timeout | null = null;
  /** Events a failed INSERT did not write, oldest first: sent before anything newer. */
  private held: Pending[] = [];
  private heldSinceMs = 0;
  private heldWritten = 0;
  private dropped = 0;
  private readonly retry = new AuditRetry(() => void this.flushSoon());

  /** The pool is the caller's: `close()` leaves it open. */
  constructor(
    private readonly pool: pg.Pool,
    private readonly options: AuditTableOptions = {},
  ) {}

  append(event: AuditEvent, lazy = false): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ event, lazy, resolve, reject });
      if (lazy) this.flushLater();
      else void this.flushSoon();
    });
  }

  private flushSoon(): Promise<void> {
    if (this.lazyTimer) clearTimeout(this.lazyTimer);
    this.lazyTimer = null;
    this.flushing ??= this.flushLoop().finally(() => {
      this.flushing = null;
      if (this.held.length > 0) return; // the retry (or an urgent event) goes on
      if (this.pending.some((p) => !p.lazy)) void this.flushSoon();
      else if (this.pending.length > 0) this.flushLater();
    });
    return this.flushing;
  }

  private flushLater(): void {
    if (this.flushing || this.lazyTimer) return;
    this.lazyTimer = setTimeout(() => void this.flushSoon(), LAZY_AUDIT_FLUSH_MS);
    this.lazyTimer.unref();
  }

  /**
   * Sends what is pending, then goes on while something urgent came meanwhile. Lazy events that came
   * during an INSERT wait for their timer (or an urgent one): a fleet connecting would otherwise keep
   * the loop sending a statement per round trip, each with a few `session.connected` rows.
   */
  private async flushLoop(): Promise<void> {
    if (this.pending.length === 0 && this.held.length === 0) return;
    do {
      const batch = this.held.splice(0, AUDIT_INSERT_MAX_ROWS);
      const fromHeld = batch.length;
      batch.push(...this.pending.splice(0, AUDIT_INSERT_MAX_ROWS - batch.length));
      try {
        const events = batch.map((p) => p.event);
        await insertAuditEvents(this.pool, events, { again: fromHeld > 0 });
        this.retry.reset();
        if (fromHeld > 0) {
          this.heldWritten += fromHeld;
          if (this.held.length === 0) this.recovered();
        }
        for (const p of batch) p.resolve();
      } catch (error) {
        this.failed(batch, error);
        return;
      }
    } while (this.held.length > 0 || this.pending.some((p) => !p.lazy));
  }

  /** Holds `batch` for the next INSERT (the callers are told now), unless its data was refused. */
  private failed(batch: Pending[], error: unknown): void {
    // Retrying refused data would refuse it again, and hold back every event after it.
    const refused = /^2[23]/.test(String((error as { code?: unknown }).code ?? ''));
    const failure = auditWriteFailure(error, { held: !refused });
    for (const p of batch) p.reject(failure);
    if (refused) {
      this.options.onWriteError?.(error);
      this.options.onLost?.(batch.length);
      return;
    }
    // Told once an outage: the held events that fail again are part of the same one.
    if (this.heldSinceMs === 0) {
      this.heldSinceMs = Date.now();
      this.options.onWriteError?.(error);
    }
    const held = batch.map((p) => ({ ...p, resolve: settled, reject: settled }));
    this.held = [...held, ...this.held];
    const over = this.held.length - (this.options.maxHeldEvents ?? DEFAULT_MAX_HELD_AUDIT_EVENTS);
    if (over > 0) {
      this.held.splice(0, over);
      this.dropped += over;
    }
    this.retry.schedule();
  }

  private recovered(): void {
    const recovery = { written: this.heldWritten, dropped: this.dropped, sinceMs: this.heldSinceMs };
    this.heldWritten = 0;
    this.dropped = 0;
    this.heldSinceMs = 0;
    this.options.onRecovered?.(recovery);
  }

  /**
   * A page, newest first. `before` is the id of the last event of the previous page: the page holds
   * what sorts after it, and is empty if that event is no longer in the table (pruned).
   */
  async list(page: AuditPageFilter): Promise<AuditEvent[]> {
    if (this.pending.length > 0) await this.flushSoon().catch(() => {});
    await this.flushing;
    const where: string[] = [];
    const params: unknown[] = [];
    const param = (value: unknown) => {
      params.push(value);
      return `$${params.length}`;
    };
    if (page.since !== undefined) where.push(`at >= ${param(page.since)}::timestamptz`);
    if (page.type) {
      // `enrollment` takes `enrollment` and everything under `enrollment.`: in C order, the names
      // from `enrollment.` up to (not including) `enrollment/` ('/' follows '.').
      const type = param(page.type);
      where.push(`(type = ${type} OR (type >= ${type} || '.' AND type < ${type} || '/'))`);
    }
    if (page.security !== undefined) where.push(`security = ${param(page.security)}`);
    if (page.before !== undefined) {
      const cursor = param(page.before);
      where.push(`(at, seq) < (SELECT at, seq FROM audit_events WHERE event_id = ${cursor})`);
    }
    const sql = `SELECT body FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY at DESC, seq DESC LIMIT ${param(page.limit)}`;
    const result = await boundedRead<{ body: AuditEvent }>(this.pool, 'The audit log', sql, params);
    return result.rows.map((row) => row.body);
  }

  /**
   * Removes the events past `retention`, oldest first, in short batches. One replica prunes at a
   * time (an advisory lock): the others return null at once. Returns the number of events removed.
   */
  async prune(retention: AuditRetention, nowMs: number): Promise<number | null> {
    const { maxAgeMs, maxRows } = retention;
    if (maxAgeMs !== undefined && !(maxAgeMs >= 0)) throw new TypeError('prune: maxAgeMs must be >= 0');
    if (maxRows !== undefined && !(Number.isInteger(maxRows) && maxRows >= 0))
      throw new TypeError('prune: maxRows must be an integer >= 0');
    const { client, release } = await checkOut(this.pool);
    try {
      const locked = await client.query(`SELECT pg_try_advisory_lock($1::bigint) AS ok`, [AUDIT_PRUNE_LOCK]);
      if (!locked.rows[0].ok) return null;
      try {
        // The newest event to remove: past the age bound, or the first one past the row bound.
        const bounds: Array<{ at: Date; seq: string }> = [];
        if (maxAgeMs !== undefined) {
          const old = await client.query(
            `SELECT at, seq FROM audit_events WHERE at < $1 ORDER BY at DESC, seq DESC LIMIT 1`,
            [new Date(nowMs - maxAgeMs)],
          );
          if (old.rows[0]) bounds.push(old.rows[0]);
        }
        if (maxRows !== undefined) {
          const past = await client.query(
            `SELECT at, seq FROM audit_events ORDER BY at DESC, seq DESC OFFSET $1 LIMIT 1`,
            [maxRows],
          );
          if (past.rows[0]) bounds.push(past.rows[0]);
        }
        const bound = bounds.sort(
          (a, b) => b.at.getTime() - a.at.getTime() || Number(BigInt(b.seq) - BigInt(a.seq)),
        )[0];
        if (!bound) return 0;
        let removed = 0;
        for (let batch = 0; batch < AUDIT_PRUNE_MAX_BATCHES; batch++) {
          const deleted = await client.query(
            `DELETE FROM audit_events WHERE seq IN (
               SELECT seq FROM audit_events WHERE (at, seq) <= ($1, $2) ORDER BY at, seq LIMIT $3)`,
            [bound.at, bound.seq, AUDIT_PRUNE_BATCH_ROWS],
          );
          removed += deleted.rowCount ?? 0;
          if ((deleted.rowCount ?? 0) < AUDIT_PRUNE_BATCH_ROWS) break;
        }
        return removed;
      } finally {
        await client.query(`SELECT pg_advisory_unlock($1::bigint)`, [AUDIT_PRUNE_LOCK]);
      }
    } finally {
      release();
    }
  }

  /** Writes what is buffered (the pool stays open: it is the caller's). */
  async close(): Promise<void> {
    if (this.pending.length > 0 || this.held.length > 0) await this.flushSoon().catch(() => {});
    await this.flushing;
    this.retry.reset();
    const lost = this.held.length + this.dropped;
    if (lost > 0) this.options.onLost?.(lost);
  }
}
