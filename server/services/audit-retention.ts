import type { Clock } from '../clock.js';
import type { AuditLog } from './audit.js';

/**
 * How long the audit table keeps events by default (`--audit-retention`): over a year, and longer
 * than the default identity lifetime (365 days), so the enrollment of every identity still valid is
 * still in the log; the file log is bounded by default too (by size, see `--audit-max-bytes`).
 */
export const DEFAULT_AUDIT_RETENTION_MS = 400 * 86_400_000;
/** How often each replica runs retention; one at a time does the work (the others skip). */
export const DEFAULT_AUDIT_PRUNE_INTERVAL_MS = 60 * 60_000;

export interface PrunableAudit extends Pick<AuditLog, 'record'> {
  /** Removes events older than `maxAgeMs` before `nowMs`; null: another replica is at it. */
  prune(retention: { maxAgeMs: number }, nowMs: number): Promise<number | null>;
}

export interface AuditRetentionOptions {
  audit: PrunableAudit;
  clock: Clock;
  /** Events older than this go. */
  retentionMs: number;
  /** @default DEFAULT_AUDIT_PRUNE_INTERVAL_MS */
  intervalMs?: number;
  logger: { info(details: object, message: string): void; warn(details: object, message: string): void };
}

/**
 * Prunes the shared audit table on a schedule: at start, then every `intervalMs` of real time, each
 * run judged by the injected clock. Every replica runs it; the table's advisory lock lets one of them
 * work while the others skip that run. A run that removed events records it (`audit.pruned`), since
 * removing history is itself something an auditor asks about. Returns `stop`, and `runNow` for tests.
 */
export function scheduleAuditRetention(options: AuditRetentionOptions) {
  const { audit, clock, retentionMs, logger } = options;
  let running: Promise<number | null> | null = null;
  let stopped = false;
  const runNow = (): Promise<number | null> => {
    running ??= (async () => {
      const now = clock.now();
      const removed = await audit.prune({ maxAgeMs: retentionMs }, now);
      if (removed) {
        const before = new Date(now - retentionMs).toISOString();
        logger.info({ removed, before }, 'audit retention removed old events');
        await audit.record({
          type: 'audit.pruned',
          actor: { kind: 'system' },
          details: { removed, before, retentionMs },
        });
      }
      return removed;
    })().finally(() => {
      running = null;
    });
    return running;
  };
  const run = () => {
    if (stopped) return;
    runNow().catch((error) =>
      logger.warn({ err: error }, 'audit retention failed; the next run tries again'),
    );
  };
  const timer = setInterval(run, options.intervalMs ?? DEFAULT_AUDIT_PRUNE_INTERVAL_MS);
  timer.unref();
  run();
  return {
    runNow,
    /** Stops the schedule and waits for a run under way. */
    async stop(): Promise<void> {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => {});
    },
  };
}
