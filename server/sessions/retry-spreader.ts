/**
 * Picks the Retry-After for websocket upgrades shed past the handshake cap, so that a crowd of
 * agents comes back over the time the server needs to serve it, not all at once and not later
 * than needed.
 *
 * A fixed short Retry-After in a reconnect storm of thousands has them return long before there is
 * room, and each shed costs the server ~160 µs; a long or growing one leaves the server idle while
 * they wait (measured: 5,000 agents back in 38 s with 1–5 s plus a growing backoff, against 12 s for
 * a minimal tRPC server accepting them all). Here the horizon is the crowd seen recently (upgrades
 * shed in the window, plus those in progress) divided by the rate at which handshakes have been
 * finishing, and each shed agent is told a uniform whole number of seconds within it.
 */
export class RetryAfterSpreader {
  private readonly shed: number[];
  private readonly finished: number[];
  /** The second (since the time origin) the newest bucket counts. */
  private second = Number.NEGATIVE_INFINITY;
  /** When the current burst of activity began (ms): rates are taken over no more than it has lasted. */
  private activeSince = Number.NEGATIVE_INFINITY;
  private lastEventAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly options: {
      /** Seconds of history the rates are taken over. @default 5 */
      windowSeconds?: number;
      /** Assumed handshakes finished per second before any has (the cap is a fair guess). */
      initialRatePerSecond: number;
      /** The longest Retry-After given. @default 60 */
      maxSeconds?: number;
      /** Milliseconds, monotonic. @default performance.now */
      now?: () => number;
      random?: () => number;
    },
  ) {
    const window = options.windowSeconds ?? 5;
    this.shed = new Array(window).fill(0);
    this.finished = new Array(window).fill(0);
  }

  /** A handshake finished (authenticated, refused or gone): the server's throughput. */
  noteFinished(): void {
    this.finished[this.advance(this.now())]!++;
  }

  private now(): number {
    return (this.options.now ?? (() => performance.now()))();
  }

  /** Counts one shed upgrade and returns the whole seconds to tell it to wait. */
  retryAfterSeconds(inProgress: number): number {
    const now = this.now();
    this.shed[this.advance(now)]!++;
    const window = this.shed.length;
    // A quarter second at least: the first sheds of a burst must not divide by almost nothing.
    const seconds = Math.max(0.25, Math.min(window, (now - this.activeSince) / 1000));
    const finished = this.finished.reduce((a, b) => a + b, 0);
    const rate = finished > 0 ? finished / seconds : this.options.initialRatePerSecond;
    const crowd = this.shed.reduce((a, b) => a + b, 0) + inProgress;
    const horizon = Math.min(
      this.options.maxSeconds ?? 60,
      Math.max(1, Math.ceil(crowd / Math.max(rate, 1))),
    );
    return 1 + Math.floor((this.options.random ?? Math.random)() * horizon);
  }

  /** Moves the ring to the current second, clearing the buckets it passes; returns its index. */
  private advance(now: number): number {
    const window = this.shed.length;
    if (now - this.lastEventAt > window * 1000) this.activeSince = now;
    this.lastEventAt = now;
    const second = Math.floor(now / 1000);
    if (second !== this.second) {
      const steps =
        this.second === Number.NEGATIVE_INFINITY ? window : Math.min(window, second - this.second);
      for (let i = 1; i <= steps; i++) {
        const index = (((second - steps + i) % window) + window) % window;
        this.shed[index] = 0;
        this.finished[index] = 0;
      }
      this.second = second;
    }
    return ((second % window) + window) % window;
  }
}
