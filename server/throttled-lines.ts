/**
 * Log lines a stranger can cause at will (refused connections, refused handshakes), written at most
 * once per interval per kind: a flood of them costs a line every few seconds, not one per attempt,
 * and pushes nothing out of the journal. The events held back are said by one more line when the
 * interval is over (the last of them, with how many it stands for), so a burst's tail is not left
 * unsaid until the next event of its kind. /metrics counts every one; the audit log coalesces its own.
 */
export class ThrottledLines {
  private readonly lastLineAt = new Map<string, number>();
  private readonly held = new Map<
    string,
    { count: number; line: (count: number) => void; timer: NodeJS.Timeout }
  >();

  constructor(
    private readonly intervalMs: number,
    /** A monotonic clock (ms). */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Calls `line` with the count of `kind` events since its last line (this one included), unless a
   * line of that kind was written within the interval: then it is held, and the last one held is
   * written when the interval is over. Kinds are a fixed set (reasons), never input.
   */
  say(kind: string, line: (count: number) => void): void {
    const now = this.now();
    const last = this.lastLineAt.get(kind) ?? Number.NEGATIVE_INFINITY;
    const held = this.held.get(kind);
    if (now - last >= this.intervalMs) {
      if (held) clearTimeout(held.timer);
      this.held.delete(kind);
      this.lastLineAt.set(kind, now);
      line((held?.count ?? 0) + 1);
      return;
    }
    if (held) {
      held.count++;
      held.line = line;
      return;
    }
    const timer = setTimeout(() => this.sayHeld(kind), Math.max(0, last + this.intervalMs - now));
    timer.unref();
    this.held.set(kind, { count: 1, line, timer });
  }

  /** Stops the timers of held lines (the process is stopping); they are not written. */
  close(): void {
    for (const held of this.held.values()) clearTimeout(held.timer);
    this.held.clear();
  }

  private sayHeld(kind: string): void {
    const held = this.held.get(kind);
    if (!held) return;
    this.held.delete(kind);
    this.lastLineAt.set(kind, this.now());
    held.line(held.count);
  }
}
