import ms from 'ms';
import type { AgentLogger } from './log.js';

/** Off the server's clock by more than this, the host's clock is said to be wrong. */
export const HOST_CLOCK_OFF_MS = 60_000;

/**
 * The server's time as this host knows it: the host's clock plus the offset the server's last upgrade
 * answer showed (`connector-server-time`). Proofs are signed by it, so a host whose clock is minutes
 * or hours off still connects (the server checks a proof's `iat` against its own clock, within 5
 * minutes); the host's clock is said to be wrong once per new offset, with the fix.
 */
export class ServerClock {
  private offsetMs = 0;
  private saidOffsetMs: number | null = null;

  constructor(
    private readonly logger: Pick<AgentLogger, 'warn'>,
    private readonly hostNow: () => number = Date.now,
  ) {}

  now(): number {
    return this.hostNow() + this.offsetMs;
  }

  /** The server said its time was `serverTime` in an answer that arrived at host time `receivedAt`. */
  observe(serverTime: number, receivedAt: number): void {
    const offset = serverTime - receivedAt;
    this.offsetMs = offset;
    if (Math.abs(offset) < HOST_CLOCK_OFF_MS) {
      this.saidOffsetMs = null;
      return;
    }
    if (this.saidOffsetMs !== null && Math.abs(offset - this.saidOffsetMs) < HOST_CLOCK_OFF_MS) return;
    this.saidOffsetMs = offset;
    this.logger.warn(
      `this host's clock is ${ms(Math.abs(offset))} ${offset > 0 ? 'behind' : 'ahead of'} the server's; ` +
        "the agent signs by the server's time meanwhile. Set the host's clock (NTP: timedatectl set-ntp true)",
      { offsetSeconds: Math.round(offset / 1000) },
    );
  }
}
