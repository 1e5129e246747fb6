import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { CLOSE_CODES } from '../../shared/protocol.js';
import type { Metrics } from '../metrics.js';
import { ThrottledLines } from '../throttled-lines.js';
import { closeWithin } from './closing.js';

/**
 * Messages an agent's socket may send per window (each a tRPC request of up to 10 calls, or a
 * keep-alive ping). An agent sends a handful an hour: its subscription, a host report, a renewal, an
 * acknowledgement, a ping every 45 s.
 */
export const AGENT_MESSAGES_PER_WINDOW = 100;
export const AGENT_MESSAGES_WINDOW_MS = 10_000;

interface Counted {
  /** Null until the handshake checks out. */
  connectorId: string | null;
  windowStart: number;
  messages: number;
}

/** Each agent socket's count, kept on the socket itself: one shared listener, no closure per session. */
const counts = new WeakMap<WebSocket, Counted>();

/**
 * Bounds what one identity can make a server do over its session: past AGENT_MESSAGES_PER_WINDOW
 * messages in a window the socket is closed 4429 with a retry-after (the rest of the window), and the
 * agent comes back after it, once a minute at most fast enough to matter (the sessions it may open
 * are limited too). Without it, one enrolled identity sent ~19,000 calls a second over one socket,
 * every one accepted, and the replica holding it answered its other callers several times slower.
 */
export class AgentMessageRate {
  private readonly lines = new ThrottledLines(10_000);
  private readonly counted: (this: WebSocket) => void;

  constructor(
    logger: Logger,
    metrics: Pick<Metrics, 'agentMessagesLimited'>,
    /** A monotonic clock (ms). */
    now: () => number = () => performance.now(),
    perWindow = AGENT_MESSAGES_PER_WINDOW,
    windowMs = AGENT_MESSAGES_WINDOW_MS,
  ) {
    const lines = this.lines;
    const counted = function (this: WebSocket) {
      const count = counts.get(this);
      if (!count) return;
      const at = now();
      if (at - count.windowStart >= windowMs) {
        count.windowStart = at;
        count.messages = 0;
      }
      if (++count.messages <= perWindow) return;
      counts.delete(this);
      metrics.agentMessagesLimited.inc();
      // What has arrived already (a burst sent in one go), or arrives while the close is answered,
      // would still reach tRPC and run: 30,000 calls sent at once all ran, the close notwithstanding.
      for (const listener of this.listeners('message'))
        if (listener !== counted) this.off('message', listener as (...args: unknown[]) => void);
      const retryAfterSeconds = Math.max(1, Math.ceil((count.windowStart + windowMs - at) / 1000));
      lines.say('agent_messages', (closed) =>
        logger.warn(
          {
            connectorId: count.connectorId,
            perWindow,
            windowMs,
            ...(closed > 1 ? { closedSinceLastLine: closed } : {}),
          },
          'agent session closed: too many messages (RATE_LIMITED)',
        ),
      );
      closeWithin(this, CLOSE_CODES.RATE_LIMITED, `RATE_LIMITED retry-after=${retryAfterSeconds}`);
    };
    this.counted = counted;
  }

  /**
   * Starts counting the messages of `ws`, an agent's socket, from its handshake on: calls sent
   * right behind the handshake wait for its verdict in tRPC, then run, so counting from the verdict
   * let a burst sent with the handshake through uncounted. Its counter runs before tRPC's listener.
   */
  watch(ws: WebSocket): void {
    counts.set(ws, { connectorId: null, windowStart: Number.NEGATIVE_INFINITY, messages: 0 });
    ws.prependListener('message', this.counted);
  }

  /** Names the connector whose session `ws` is, once its handshake checked out (for the log line). */
  authenticated(ws: WebSocket, connectorId: string): void {
    const count = counts.get(ws);
    if (count) count.connectorId = connectorId;
  }
}
