/**
 * Log lines a stranger can cause at will (refused connections, refused handshakes), written at most
 * once per interval per kind, each with the count of events since the last one: a flood of them
 * costs a line every few seconds, not one per attempt, and pushes nothing out of the journal.
 * /metrics counts every one; the audit log coalesces its own.
 */
export class ThrottledLines {
  private readonly sinceLine = new Map<string, number>();
  private readonly lastLineAt = new Map<string, number>();

  constructor(
    private readonly intervalMs: number,
    /** A monotonic clock (ms). */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Calls `line` with the count of `kind` events since its last line (this one included), unless a
   * line of that kind was written within the interval. Kinds are a fixed set (reasons), never input.
   */
  say(kind: string, line: (count: number) => void): void {
    const count = (this.sinceLine.get(kind) ?? 0) + 1;
    const now = this.now();
    if (now - (this.lastLineAt.get(kind) ?? Number.NEGATIVE_INFINITY) < this.intervalMs) {
      this.sinceLine.set(kind, count);
      return;
    }
    this.sinceLine.set(kind, 0);
    this.lastLineAt.set(kind, now);
    line(count);
  }
}
