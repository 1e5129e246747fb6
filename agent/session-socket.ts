/**
 * How long after its socket opens (connectionParams, then the subscription) a session may go
 * without `ready`. A genuine server sends it once it has checked the identity and recorded the
 * session, well within a second; a server that takes the session, answers pings and never says
 * `ready` (a broken replica, a proxy holding the upgrade) held the agent there for ever, with the
 * other servers of its list never tried. Generous, so that a busy server is not left for being slow.
 */
export const READY_TIMEOUT_MS = 30_000;

export interface SessionSocketOptions {
  /** The socket tRPC uses now (its connection's), if any. */
  current: () => WebSocket | undefined;
  /** Whether the session is over (nothing more is sent). */
  finished: () => boolean;
  /** @default READY_TIMEOUT_MS */
  readyTimeoutMs?: number | undefined;
  /** Told before the agent hangs up on a socket that sent no `ready` in time (SessionLink says why). */
  noReady: (socket: WebSocket, waitedMs: number) => void;
}

/**
 * What the agent minds about the session's socket itself, beside tRPC: that `ready` comes over it
 * in time, and that a request is not sent while it closes.
 */
export class SessionSocket {
  private readyDeadline: NodeJS.Timeout | undefined;

  constructor(private readonly o: SessionSocketOptions) {}

  /** Hangs up on `socket` if no `ready` comes over it in time; the link then moves on. */
  awaitReady(socket: WebSocket): void {
    clearTimeout(this.readyDeadline);
    const waitMs = this.o.readyTimeoutMs ?? READY_TIMEOUT_MS;
    this.readyDeadline = setTimeout(() => {
      if (this.o.finished() || socket !== this.o.current()) return;
      this.o.noReady(socket, waitMs);
      socket.close(1000, 'no ready in time');
    }, waitMs);
    this.readyDeadline.unref();
  }

  /** `ready` came (or the session is over): no deadline. */
  readyCame(): void {
    clearTimeout(this.readyDeadline);
  }

  /**
   * Makes a request over the session once the socket in use is no longer closing. tRPC sends a
   * request made while its socket closes (the agent hanging up on a server that broke the protocol,
   * a dead link's close going unanswered) over a socket it opens at once: the backoff and
   * SessionLink's reading of the close were skipped, and the subscription, moved there only once
   * the old socket closed, went out batched with the request. Waiting for the close (bounded:
   * CLOSE_ANSWER_MS) lets the reconnect that follows it carry the request.
   */
  async afterClosing<T>(call: () => Promise<T>): Promise<T> {
    const ws = this.o.current();
    if (ws && ws.readyState === ws.CLOSING) {
      // Added after tRPC's own listener: by the time this runs, its reconnect has begun.
      await new Promise<void>((resolve) => ws.addEventListener('close', () => resolve(), { once: true }));
      if (this.o.finished()) throw new Error('the session is over');
    }
    return call();
  }
}
