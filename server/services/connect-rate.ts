import type { Clock } from '../clock.js';

interface Window {
  startedAt: number;
  connects: number;
}

/**
 * Bounds how often one connector may open sessions: `perWindow` handshakes whose identity and proof
 * checked out per `windowMs`, counted in fixed windows from the first. A loop reconnecting with a
 * valid identity (any current provisioning key gives one) otherwise cost two signature checks, a
 * connection record and, with several replicas, a claim that every replica applies, per connect,
 * hundreds a second. Past the limit a handshake naming the connector is refused before its
 * signatures are checked: only checked handshakes are counted, so a stranger who knows a connector's
 * id (ids are no secret) cannot use up its allowance, and one who sends junk naming a limited
 * connector is refused at no cost. A fleet reconnecting after a restart connects once each.
 * Counted per server process: behind a load balancer a loop gets each replica's allowance.
 */
export class ConnectRate {
  /** Opened in time order, all `windowMs` long: the expired ones come first. */
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly clock: Clock,
    private readonly perWindow: number,
    private readonly windowMs = 60_000,
  ) {}

  /** Seconds until a handshake naming `connectorId` may be checked again, or 0. */
  retryAfterSeconds(connectorId: string): number {
    const now = this.clock.now();
    this.forgetExpired(now);
    const window = this.current(connectorId, now);
    if (!window || window.connects < this.perWindow) return 0;
    return Math.max(1, Math.ceil((window.startedAt + this.windowMs - now) / 1000));
  }

  /** Counts a handshake of `connectorId` whose identity and proof checked out. */
  checked(connectorId: string): void {
    const now = this.clock.now();
    this.forgetExpired(now);
    const window = this.current(connectorId, now);
    if (window) {
      window.connects++;
      return;
    }
    // Set anew, not updated: the map stays in the order windows were opened.
    this.windows.delete(connectorId);
    this.windows.set(connectorId, { startedAt: now, connects: 1 });
  }

  /**
   * The connector's window if `now` is within it. Its own bounds are checked, not only the pruning:
   * after the wall clock stepped back, a window from before the step stops the pruning until the
   * clock is past it again, and those opened since kept counting for as long (a connector connecting
   * every 2 min was refused after an hour's step), or were told to wait the whole step.
   */
  private current(connectorId: string, now: number): Window | undefined {
    const window = this.windows.get(connectorId);
    if (!window || now < window.startedAt || now >= window.startedAt + this.windowMs) return undefined;
    return window;
  }

  private forgetExpired(now: number): void {
    for (const [connectorId, window] of this.windows) {
      if (now < window.startedAt + this.windowMs) break;
      this.windows.delete(connectorId);
    }
  }
}
