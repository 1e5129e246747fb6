import { hostFactsDigest } from '../shared/host-facts.js';
import type { HostFacts } from '../shared/schemas.js';
import { collectHostFacts } from './host-facts.js';
import type { AgentLogger } from './log.js';

export interface HostReporterOptions {
  /** Sends the facts to the server (`agent.report` over the session). */
  report: (host: HostFacts) => Promise<unknown>;
  logger: Pick<AgentLogger, 'info' | 'warn'>;
  /** Facts collected before connecting. */
  hostFacts: HostFacts;
  /** How often host facts are collected again, and sent if they changed. @default 300000 */
  intervalMs?: number | undefined;
  /** @default collectHostFacts (systeminformation) */
  collect?: (() => Promise<HostFacts>) | undefined;
  /** The session is over: a failed report is not worth saying then. */
  finished: () => boolean;
}

/**
 * Keeps the server's copy of this host's facts current: sends them when a session starts, unless
 * the server already holds the same (the digest in its `ready`), then collects them again every
 * `intervalMs` and sends them only when they changed. Collecting costs the event loop hundreds of
 * milliseconds on a busy host, so it is never on the connect path: a revoke arriving right after
 * connecting is acted on at once.
 */
export class HostReporter {
  private facts: HostFacts;
  /** The digest of the facts the server holds, from its `ready` or from a report it accepted. */
  private serverDigest: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** A refresh (collect, then report) under way: the next tick waits for it rather than repeat it. */
  private refreshing = false;

  constructor(private readonly o: HostReporterOptions) {
    this.facts = o.hostFacts;
  }

  /** A session started; the server holds facts with `digest` (null: an older server, which says none). */
  sessionStarted(digest: string | null): void {
    this.serverDigest = digest;
    void this.reportIfChanged(false);
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.refresh(), this.o.intervalMs ?? 300_000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * One tick: skipped while the last one runs. Ticks that overlapped a slow report (a busy server,
   * a busy host) each sent the same changed facts again, the server's digest not yet updated.
   */
  private async refresh(): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      await this.reportIfChanged(true);
    } finally {
      this.refreshing = false;
    }
  }

  private async reportIfChanged(refresh: boolean): Promise<void> {
    try {
      if (refresh) this.facts = await (this.o.collect ?? collectHostFacts)();
      const facts = this.facts;
      const digest = hostFactsDigest(facts);
      if (digest === this.serverDigest) return;
      const replaced = this.serverDigest;
      await this.o.report(facts);
      this.serverDigest = digest;
      if (replaced) this.o.logger.info('host facts changed; reported them');
    } catch (error) {
      if (!this.o.finished())
        this.o.logger.warn('could not report host facts', { error: (error as Error).message });
    }
  }
}
