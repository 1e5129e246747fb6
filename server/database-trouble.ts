import pg from 'pg';
import type { Logger } from 'pino';

/** How often the trouble is logged again while it lasts (its latest failure, and the count). */
export const REPEAT_LOG_MS = 60_000;
/** How long without a failure before a successful read ends the trouble (a heartbeat fails every 5 s). */
export const QUIET_BEFORE_RECOVERED_MS = 10_000;

/** An error PostgreSQL or the connection to it raised (a SQLSTATE, a socket's errno, the client's own). */
export function isDatabaseError(error: unknown): boolean {
  if (error instanceof pg.DatabaseError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return true;
  const message = (error as Error | null)?.message ?? '';
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error/.test(
    message,
  );
}

/**
 * What a replica logs while its database fails. Every part of it (the change feed, the commits, the
 * heartbeat, the sealed keys, the audit log) retries on its own and would log each failure with its
 * stack: ~4 lines a second, tens of KB in half a minute, and no line when it ends. Here: one error
 * when the trouble starts (what failed, the code, the reason), one line a REPEAT_LOG_MS while it
 * lasts (the latest failure, how many there were), and one line when the database answers again.
 */
export class DatabaseTrouble {
  private since: number | null = null;
  private lastFailureAt = 0;
  private failures = 0;
  private lastCause: string | null = null;
  private lastCode: string | null = null;
  private lastLoggedAt = 0;

  constructor(
    private readonly logger: Pick<Logger, 'error' | 'warn' | 'info'>,
    private readonly now: () => number = Date.now,
  ) {}

  get troubled(): boolean {
    return this.since !== null;
  }

  /** The last failure's code and reason while the trouble lasts (for the replicas table), else null. */
  get cause(): string | null {
    return this.since === null ? null : this.lastCause;
  }

  /** The last failure's code alone (e.g. 28P01, ECONNREFUSED) while the trouble lasts, else null. */
  get code(): string | null {
    return this.since === null ? null : this.lastCode;
  }

  failed(what: string, error: unknown): void {
    const now = this.now();
    const code = (error as { code?: string } | null)?.code ?? null;
    const reason = ((error as Error | null)?.message ?? String(error)).split('\n')[0];
    this.failures++;
    this.lastFailureAt = now;
    this.lastCause = code ? `${code}: ${reason}` : reason!;
    this.lastCode = code;
    if (this.since === null) {
      this.since = now;
      this.lastLoggedAt = now;
      this.logger.error(
        { what, code, reason },
        'PostgreSQL cannot be used: this replica takes no new sessions and refuses changes until it answers (/healthz says why); each part retries by itself',
      );
      return;
    }
    if (now - this.lastLoggedAt < REPEAT_LOG_MS) return;
    this.lastLoggedAt = now;
    this.logger.warn(
      { what, code, reason, failures: this.failures, forSeconds: Math.round((now - this.since) / 1000) },
      'PostgreSQL still failing',
    );
  }

  /**
   * A read of the database went through (the change feed's, every second): the trouble, if any, is
   * over once nothing has failed for QUIET_BEFORE_RECOVERED_MS (one statement that keeps failing
   * while the rest works must not log its start and its end every few seconds).
   */
  answered(): void {
    if (this.since === null || this.now() - this.lastFailureAt < QUIET_BEFORE_RECOVERED_MS) return;
    // The outage lasted from its first failure to its last; the quiet period after it is not part of it.
    this.logger.info(
      {
        forSeconds: Math.round((this.lastFailureAt - this.since) / 1000),
        failures: this.failures,
        quietForSeconds: Math.round((this.now() - this.lastFailureAt) / 1000),
      },
      'PostgreSQL answers again',
    );
    this.since = null;
    this.failures = 0;
  }
}
