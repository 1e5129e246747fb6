import type { Clock } from '../clock.js';
import type { SessionParty } from './agent-sessions.js';

/** What a window of one connector's connects past the audited ones comes to. */
export interface ConnectsSummary {
  /** The last of them: its address is the summary's. */
  last: SessionParty;
  suppressed: number;
  windowStart: number;
  windowEnd: number;
}

interface Window {
  startedAt: number;
  connects: number;
  suppressed: number;
  last: SessionParty;
}

/**
 * Bounds what one identity can add to the audit log by reconnecting. Every connect is audited
 * (`session.connected`) up to `perWindow` per connector per window; the rest of the window's are
 * counted into one summary event (`details.suppressed`, `windowStart`, `windowEnd`) written when the
 * window is over. Without it, a holder of one identity (any current provisioning key gives one)
 * reconnecting in a loop wrote an event per connect, 650 a second here, and rotated the security
 * events (`session.replaced`) out of the audit log within minutes. A fleet reconnecting after a
 * restart connects once each: all audited, as before, and nothing held for them: a window opens
 * only for a connector whose previous connect was within the window's length.
 * Counts not yet written are lost with the process, not the first events of each window.
 */
export class RepeatedConnects {
  private readonly windows = new Map<string, Window>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly writeSummary: (summary: ConnectsSummary) => void,
    private readonly perWindow = 10,
    private readonly windowMs = 60_000,
  ) {}

  /**
   * Whether this connect is audited on its own; if not, it is counted into its window's summary.
   * `previousConnectAt`: the connector's connect before this one (null if none).
   */
  admit(session: SessionParty, previousConnectAt: number | null): boolean {
    const now = this.clock.now();
    this.closeExpired(now);
    const open = this.windows.get(session.connectorId);
    if (open) {
      open.connects++;
      open.last = session;
      if (open.connects <= this.perWindow) return true;
      open.suppressed++;
      return false;
    }
    // The first connect in a window's length: nothing to hold. The second opens a window (so a
    // loop gets its first connect and `perWindow` more audited in its first minute).
    if (previousConnectAt === null || now - previousConnectAt >= this.windowMs) return true;
    this.windows.set(session.connectorId, { startedAt: now, connects: 1, suppressed: 0, last: session });
    this.timer ??= setInterval(() => this.closeExpired(this.clock.now()), this.windowMs).unref();
    return true;
  }

  /** Writes every summary not yet written and forgets the windows (the server is stopping). */
  close(): void {
    const now = this.clock.now();
    for (const window of this.windows.values()) this.summarize(window, now);
    this.windows.clear();
    this.stopTimer();
  }

  /** Ends the windows whose time is over, writing the summaries of those that counted any. */
  private closeExpired(now: number): void {
    // Opened in time order, all windowMs long: the expired ones come first.
    for (const [connectorId, window] of this.windows) {
      const end = window.startedAt + this.windowMs;
      if (now < end) break;
      this.windows.delete(connectorId);
      this.summarize(window, end);
    }
    if (this.windows.size === 0) this.stopTimer();
  }

  private summarize(window: Window, end: number): void {
    if (window.suppressed === 0) return;
    this.writeSummary({
      last: window.last,
      suppressed: window.suppressed,
      windowStart: window.startedAt,
      windowEnd: end,
    });
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
