// What the audit log's backends (the file, audit-file.ts; the table, postgres/audit-table.ts) do with
// events they could not write. Those events belong to changes that were already saved: dropping them
// would leave a revoke or a deletion with no trace. They are held in memory, in order, and written
// with the next write or the next retry, whichever comes first.

import { DomainError } from '../../shared/errors.js';

/** The first retry after a failed write; each next one waits twice as long, up to the max. */
export const AUDIT_RETRY_FIRST_MS = 250;
export const AUDIT_RETRY_MAX_MS = 5000;
/** Events held at most while the audit log cannot be written; past it the oldest are dropped (and counted). */
export const DEFAULT_MAX_HELD_AUDIT_EVENTS = 100_000;

/** What a backend tells its owner about an outage of its writes. */
export interface HeldAuditOptions {
  /** Told of the failure that starts an outage (and of failed rotations): the log should say why. */
  onWriteError?: (error: unknown) => void;
  /** Told once held events are written again: how many, and how many were dropped meanwhile. */
  onRecovered?: (recovered: HeldAuditRecovery) => void;
  /** Told at close() of the events still held: they are lost. */
  onLost?: (count: number) => void;
  /** @default DEFAULT_MAX_HELD_AUDIT_EVENTS */
  maxHeldEvents?: number;
}

export interface HeldAuditRecovery {
  written: number;
  dropped: number;
  /** When the outage began (ms since the epoch). */
  sinceMs: number;
}

/**
 * What a caller whose event could not be written is told: its change was saved (the event comes
 * after it), so not STORE_UNAVAILABLE, whose "nothing was changed" a script would act on. `held`:
 * the event is kept for the retry; otherwise the storage refused its data, and it is lost.
 */
export function auditWriteFailure(error: unknown, { held = true }: { held?: boolean } = {}): DomainError {
  const code = (error as { code?: string }).code ?? (error as Error).message;
  return new DomainError(
    'AUDIT_NOT_WRITTEN',
    held
      ? `The change was saved, but its audit event could not be written yet (${code}): the server holds it in memory and writes it once the audit log takes writes again.`
      : `The change was saved, but the audit log refused its event (${code}): it is not in the audit log, and the server's log says why.`,
  );
}

/** The retry of held events: one timer, backing off from AUDIT_RETRY_FIRST_MS to AUDIT_RETRY_MAX_MS. */
export class AuditRetry {
  private timer: NodeJS.Timeout | null = null;
  private delayMs = AUDIT_RETRY_FIRST_MS;

  constructor(private readonly retry: () => void) {}

  /** Schedules the next retry unless one is due already. */
  schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.retry();
    }, this.delayMs);
    // The server's sockets keep the process up; a retry alone must not.
    this.timer.unref();
    this.delayMs = Math.min(this.delayMs * 2, AUDIT_RETRY_MAX_MS);
  }

  /** A write went through: the next outage starts its backoff afresh. */
  reset(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.delayMs = AUDIT_RETRY_FIRST_MS;
  }

  get pending(): boolean {
    return this.timer !== null;
  }
}
