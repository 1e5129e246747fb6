import type { Clock } from '../clock.js';
import type { AuditEvent, AuditInput } from './audit.js';
import { iso } from './views.js';

export interface AuditCoalescerOptions {
  /** How long the refusals of one (type, reason, address) are counted into one summary. @default 60000 */
  windowMs?: number;
  /**
   * (type, reason, address) windows open at once. Past it, a refusal from an address without a
   * window of its own is counted in the one window its (type, reason) shares with every such address
   * (`remoteAddress: null`, `details.otherAddresses: true`). @default 1024
   */
  maxKeys?: number;
}

interface Window {
  startedAt: number;
  /** Start of what `suppressed` counts: the window's start, or the last time it was flushed. */
  countedSince: number;
  suppressed: number;
  /** Counts refusals from every address past the `maxKeys` cap. */
  otherAddresses: boolean;
  /** The summary event to write: the first refusal, less the fields the later ones did not share. */
  summary: AuditInput;
}

const SHARED_FIELDS = ['groupId', 'connectorId', 'keyId'] as const;

/**
 * Bounds what strangers can add to the audit log: refusals they can repeat at will (bad keys, rate
 * limits, refused handshakes) are written once per (type, reason, source address) per window, and
 * the rest of the window's are counted into one summary event, written when the window is over
 * (at the next such refusal, on a timer, or when the log is listed or closed). The summary carries
 * `details.suppressed` (how many it stands for) and `details.windowStart` / `windowEnd`, so the
 * counts still add up to every refusal made. Counts not yet written live in memory: a crash loses
 * them, not the first event of each window.
 */
export class AuditCoalescer {
  private readonly windows = new Map<string, Window>();
  private readonly windowMs: number;
  private readonly maxKeys: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly write: (input: AuditInput) => Promise<AuditEvent>,
    private readonly clock: Clock,
    options: AuditCoalescerOptions = {},
  ) {
    this.windowMs = options.windowMs ?? 60_000;
    this.maxKeys = options.maxKeys ?? 1024;
    if (!(this.windowMs > 0) || !(this.maxKeys >= 1))
      throw new TypeError('AuditCoalescer: windowMs must be > 0 and maxKeys >= 1');
  }

  /**
   * Writes the refusal if it opens a window (resolving once it is durable, like `AuditLog.record`),
   * or counts it into the open one (resolving at once).
   */
  async record(refusal: AuditInput): Promise<void> {
    const input: AuditInput = { ...refusal, outcome: 'refused' };
    const now = this.clock.now();
    const summaries = this.closeExpired(now);
    const reason = input.reason ?? null;
    // Per connector too when the refusal names one: a summary stands for refusals of that one alone.
    let key = keyOf(input.type, reason, input.remoteAddress ?? null, input.connectorId ?? null);
    const overflow = !this.windows.has(key) && this.windows.size >= this.maxKeys;
    if (overflow) key = keyOf(input.type, reason, '*', null);
    const open = this.windows.get(key);
    if (open) {
      count(open, input);
      await Promise.all(summaries);
      return;
    }
    const summary: AuditInput = {
      ...input,
      remoteAddress: overflow ? null : (input.remoteAddress ?? null),
      // The overflow window mixes connectors: its summary names none.
      ...(overflow && input.connectorId
        ? { connectorId: null, actor: { kind: 'agent' as const, connectorId: null } }
        : {}),
      details: { ...input.details },
    };
    this.windows.set(key, {
      startedAt: now,
      countedSince: now,
      suppressed: 0,
      otherAddresses: overflow,
      summary,
    });
    this.timer ??= setInterval(() => {
      Promise.all(this.closeExpired(this.clock.now())).catch(() => {
        // The audit log reports its own write failures (FileAuditLog's onWriteError).
      });
    }, this.windowMs).unref();
    await Promise.all([...summaries, this.write(input).then(() => {})]);
  }

  /** Writes a summary of every count not yet written, windows staying open: for list() and close(). */
  flush(): Promise<void> {
    const now = this.clock.now();
    const writes = this.closeExpired(now);
    for (const window of this.windows.values()) {
      if (window.suppressed > 0) writes.push(this.writeSummary(window, now));
      window.countedSince = now;
    }
    return Promise.all(writes).then(() => {});
  }

  /** Flushes, then forgets every window and stops the timer. */
  close(): Promise<void> {
    const flushed = this.flush();
    this.windows.clear();
    this.stopTimer();
    return flushed;
  }

  /** Ends the windows whose time is over; returns the summaries written for those that counted any. */
  private closeExpired(now: number): Promise<void>[] {
    const writes: Promise<void>[] = [];
    // Windows are opened in time order and all last windowMs, so the expired ones come first.
    for (const [key, window] of this.windows) {
      const end = window.startedAt + this.windowMs;
      if (now < end) break;
      this.windows.delete(key);
      if (window.suppressed > 0) writes.push(this.writeSummary(window, end));
    }
    if (this.windows.size === 0) this.stopTimer();
    return writes;
  }

  private writeSummary(window: Window, end: number): Promise<void> {
    const event: AuditInput = {
      ...window.summary,
      details: {
        ...window.summary.details,
        suppressed: window.suppressed,
        windowStart: iso(window.countedSince),
        windowEnd: iso(end),
        ...(window.otherAddresses ? { otherAddresses: true } : {}),
      },
    };
    window.suppressed = 0;
    return this.write(event).then(() => {});
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

function keyOf(
  type: string,
  reason: string | null,
  address: string | null,
  connectorId: string | null,
): string {
  return `${type}\u0000${reason ?? ''}\u0000${address ?? ''}\u0000${connectorId ?? ''}`;
}

/** Counts a refusal into its window; a field the refusals of a window do not share is left out of its summary. */
function count(window: Window, input: AuditInput): void {
  window.suppressed++;
  const summary = window.summary;
  for (const field of SHARED_FIELDS)
    if ((summary[field] ?? null) !== (input[field] ?? null)) summary[field] = null;
  if (input.security) summary.security = true;
  const details = summary.details ?? {};
  for (const name of Object.keys(details))
    if (JSON.stringify(details[name]) !== JSON.stringify(input.details?.[name])) delete details[name];
}
