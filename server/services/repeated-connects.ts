import type { Clock } from '../clock.js';
import type { SessionParty } from './agent-sessions.js';

/** What a window of one connector's connects past the audited ones comes to. */
export interface ConnectsSummary {
  /** The last of them: the summary names its connector and group. */
  last: SessionParty;
  /** Connects not audited on their own. */
  suppressed: number;
  /** Of those, how many replaced a live session (each a `session.replaced` otherwise). */
  replaced: number;
  /** Identities renewed on those sessions (each an `identity.renewed` otherwise). */
  renewed: number;
  /** The addresses they came from, the first MAX_ADDRESSES of them. */
  addresses: string[];
  windowStart: number;
  windowEnd: number;
}

/** Addresses a summary names: a stolen identity shows as a second one. */
const MAX_ADDRESSES = 10;

interface Window {
  startedAt: number;
  connects: number;
  suppressed: number;
  replaced: number;
  renewed: number;
  addresses: Set<string>;
  last: SessionParty;
}

/**
 * Bounds what one identity can add to the audit log by reconnecting. A connector's connects are
 * audited as they come (`session.connected`, and `session.replaced` when one replaces a live
 * session), but once it reconnects within `windowMs` of its last connect a window opens: `perWindow`
 * more are audited, and the rest of the window's, with the replacements and renewals they bring,
 * are counted into one summary event (`details.suppressed`, `replaced`, `renewed`, `addresses`,
 * `windowStart`, `windowEnd`; a security event when any replaced a session) written when the window
 * is over. Without it, a holder of one identity (any current provisioning key gives one)
 * reconnecting in a loop wrote an event or three per connect, hundreds a second, and rotated the
 * security events out of the audit log within minutes. A fleet reconnecting after a restart
 * connects once each: all audited, and nothing held for them. Counts not yet written are lost with
 * the process, not the first events of each window.
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
   * Whether this connect (and a replacement it made) is audited on its own; if not, it is counted
   * into its window's summary. `previousConnectAt`: the connector's connect before this one.
   */
  admit(session: SessionParty, previousConnectAt: number | null, replaced: boolean): boolean {
    const now = this.clock.now();
    this.closeExpired(now);
    const open = this.windows.get(session.connectorId);
    if (open) {
      open.connects++;
      open.last = session;
      if (open.connects <= this.perWindow) return true;
      open.suppressed++;
      if (replaced) open.replaced++;
      if (open.addresses.size < MAX_ADDRESSES) open.addresses.add(session.remoteAddress);
      return false;
    }
    // The first connect in a window's length: nothing to hold. The second opens a window (so a
    // loop gets its first connect and `perWindow` more audited in its first minute).
    if (previousConnectAt === null || now - previousConnectAt >= this.windowMs) return true;
    this.windows.set(session.connectorId, {
      startedAt: now,
      connects: 1,
      suppressed: 0,
      replaced: 0,
      renewed: 0,
      addresses: new Set(),
      last: session,
    });
    this.timer ??= setInterval(() => this.closeExpired(this.clock.now()), this.windowMs).unref();
    return true;
  }

  /**
   * Whether a renewal of `connectorId`'s identity is audited on its own: not while its connects are
   * being counted (a token past two thirds of its life is renewed at every connect), when it is
   * counted into the summary instead.
   */
  admitRenewal(connectorId: string): boolean {
    const open = this.windows.get(connectorId);
    if (!open || open.connects <= this.perWindow || this.clock.now() >= open.startedAt + this.windowMs)
      return true;
    open.renewed++;
    return false;
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
    if (window.suppressed === 0 && window.renewed === 0) return;
    this.writeSummary({
      last: window.last,
      suppressed: window.suppressed,
      replaced: window.replaced,
      renewed: window.renewed,
      addresses: [...window.addresses],
      windowStart: window.startedAt,
      windowEnd: end,
    });
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
