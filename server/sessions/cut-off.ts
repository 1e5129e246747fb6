/**
 * What a replica that cannot reach the database does with its agents' sessions (`--when-cut-off`).
 * Cut off, it hears no revoke, delete or disable made through another replica: `end-sessions` ends
 * them (1012, not final) just before the others count it dead, so each agent reconnects to a replica
 * that hears them or waits; `keep-sessions` keeps them until the database answers again, at the
 * price of a revoke through another replica reaching them only then.
 */
export type WhenCutOff = 'end-sessions' | 'keep-sessions';

export const WHEN_CUT_OFF: readonly WhenCutOff[] = ['end-sessions', 'keep-sessions'];

/**
 * How much sooner than the others count it dead a cut-off replica ends its sessions: they judge its
 * last heartbeat by the database's clock as each follows it (DatabaseClock), which a slow round trip
 * or a replica started without that clock (tests) can put ahead of its own by up to this much.
 */
export const CUT_OFF_MARGIN_MS = 3000;

/** How long without a heartbeat going through before sessions end (12 s with the 15 s default). */
export function cutOffAfterMs(deadAfterMs: number): number {
  return deadAfterMs - Math.min(CUT_OFF_MARGIN_MS, deadAfterMs / 5);
}

export interface CutOffWatchOptions {
  whenCutOff: WhenCutOff;
  /** Another replica counts this one dead when its last heartbeat is older than this. */
  deadAfterMs: number;
  /**
   * Measures the silence: a wall clock stepped forward (NTP, a test's ManualClock) must not end a
   * fleet's sessions, nor one stepped back keep them. @default performance.now
   */
  monotonic?: () => number;
  /** Ends every session of this replica; answers how many it ended. */
  endSessions: () => number;
  /** Told once per cut-off, after the sessions ended: how many, and the silence that ended them. */
  onEnded?: (sessions: number, silentMs: number) => void;
  /**
   * With `keep-sessions`, told once per cut-off at the same point instead: the sessions stay, and
   * the operator should know this replica can no longer hear a revoke made elsewhere.
   */
  onKept?: (silentMs: number) => void;
}

/**
 * Times the silence since the last heartbeat that went through, counted from when it was sent (the
 * others see the time it carries), and ends the sessions once it passes `cutOffAfterMs`. Checked on
 * a timer of its own: a heartbeat to a database that stopped answering may hang rather than fail.
 */
export class CutOffWatch {
  private lastThroughAt: number;
  private cutOff = false;
  /** With keep-sessions: this cut-off was said (once until the database answers again). */
  private keptSaid = false;
  readonly afterMs: number;
  private readonly monotonic: () => number;

  constructor(private readonly o: CutOffWatchOptions) {
    this.monotonic = o.monotonic ?? (() => performance.now());
    this.afterMs = cutOffAfterMs(o.deadAfterMs);
    this.lastThroughAt = this.monotonic();
  }

  /** The moment a heartbeat is sent, to hand to `wentThrough` if it does. */
  sending(): number {
    return this.monotonic();
  }

  wentThrough(sentAt: number): void {
    this.lastThroughAt = Math.max(this.lastThroughAt, sentAt);
  }

  /** Ends the sessions (once) when the silence has lasted too long and the mode says so. */
  check(): void {
    if (this.cutOff || this.keptSaid) return;
    const silentMs = this.monotonic() - this.lastThroughAt;
    if (silentMs <= this.afterMs) return;
    if (this.o.whenCutOff === 'keep-sessions') {
      this.keptSaid = true;
      this.o.onKept?.(silentMs);
      return;
    }
    this.cutOff = true;
    this.o.onEnded?.(this.o.endSessions(), silentMs);
  }

  /**
   * Whether it ended the sessions and has not been back since: until then the replica is not ready,
   * and its rows in the table (claims that went out before it was cut off) are released first.
   */
  get endedSessions(): boolean {
    return this.cutOff;
  }

  /** The database answered again and the replica's rows were released. */
  back(): void {
    this.cutOff = false;
    this.keptSaid = false;
  }
}
