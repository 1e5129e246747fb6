import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { WebSocket, WebSocketServer } from 'ws';
import { CLOSE_CODES, SERVER_TIME_HEADER, SESSION_NONCE_HEADER } from '../../shared/protocol.js';
import type { Metrics } from '../metrics.js';
import { closeWithin } from '../sessions/closing.js';
import { RetryAfterSpreader } from '../sessions/retry-spreader.js';

// Admission control. In a reconnect storm, upgrades that wait behind thousands of others are
// abandoned by agents after their 30 s handshake timeout (the work queued for them wasted) and
// delay admin calls. Past the cap an upgrade is answered 503 at once, before any websocket or
// tRPC work, and the agent comes back after Retry-After (spread over the time the server needs
// for the crowd it has seen) plus a second of jitter.

/** Shedding is logged at most once per interval, with the count since the last line. */
const SHED_LOG_INTERVAL_MS = 10_000;

/**
 * How long a websocket waiting for its connectionParams is safe from a newcomer taking its slot
 * when all are taken. An agent sends them one round trip after the 101, but the benchmark's client
 * processes, thousands of agents each, take seconds under a storm: well above both, and short
 * enough that strangers who upgrade and then say nothing must open over a thousand sockets a
 * second (4,096 slots) to keep new agents out, where the handshake timeout alone let ~340 do it.
 */
export const HANDSHAKE_GRACE_MS = 3000;

/** A websocket handshake holding one admission slot, from its upgrade request to its authentication. */
interface Handshake {
  /** Closes the socket with 4408 if its connectionParams do not arrive in time. */
  timer: NodeJS.Timeout | undefined;
  /** Sent in the 101 response; the agent's proof must sign it. */
  nonce: string;
  /** Frees the slot and drops the timer and the close listener; idempotent. */
  end(): void;
}

/** What the websocket's createContext gets once its connectionParams came. */
export interface ArrivedHandshake {
  /** The nonce sent in this connection's 101 response, which its proof must sign. */
  nonce: string;
  /** Frees the admission slot: call it once the verdict is in. */
  end(): void;
}

export interface WebsocketAdmission {
  /** The `upgrade` listener for the HTTP server. */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /**
   * The connectionParams came: the deadline is met. The slot is held until `end()`. Null when they
   * came too late: the handshake was replaced or timed out, and its socket closed 4408 already.
   */
  paramsArrived(req: IncomingMessage): ArrivedHandshake | null;
  /** Handshakes holding a slot now. */
  inProgress(): number;
  /** Cuts every upgraded socket not yet closed: shutdown must not wait on them for ever. */
  destroyUpgraded(): void;
}

export interface WebsocketAdmissionOptions {
  maxHandshakesInProgress: number;
  handshakeTimeoutMs: number;
  /**
   * How long after its 101 a handshake waiting for its connectionParams keeps its slot against a
   * newcomer when every slot is taken (see onUpgrade). @default HANDSHAKE_GRACE_MS
   */
  graceMs?: number;
  /** Told when an upgrade was answered 101: the server now waits for the socket's first message. */
  onUpgraded?: (socket: Duplex, graceMs: number) => void;
  /** A monotonic clock in ms, for the grace. @default performance.now */
  monotonic?: () => number;
  metrics: Pick<Metrics, 'handshakesShed' | 'handshakesEvicted'>;
  logger: Logger;
  /** The server's clock, the one proofs are checked by: sent in each 101 (SERVER_TIME_HEADER). */
  now: () => number;
  /**
   * Why this server should take no new session now (a replica that lost its database), or nothing
   * when it may: new upgrades are then answered 503 with Retry-After, and sessions it has stay.
   */
  notReady?: () => string | null;
  /**
   * The server's own origin for an upgrade sent to `host` (its Host header). An upgrade carrying an
   * `Origin` (a browser's) from any other origin is answered 403: a page elsewhere must not open a
   * socket to the server. Upgrades without one (agents, the CLI) pass. Absent: no check.
   */
  ownOrigin?: (host: string | undefined) => string | null;
}

/** Whether an upgrade's `Origin` header, if it has one, names the server's own origin. */
function fromOwnOrigin(req: IncomingMessage, ownOrigin: WebsocketAdmissionOptions['ownOrigin']): boolean {
  const origin = req.headers.origin;
  if (origin === undefined || !ownOrigin) return true;
  const own = ownOrigin(req.headers.host);
  if (own === null) return false;
  try {
    return new URL(origin).origin === own;
  } catch {
    return false; // `null` (a sandboxed page, a file) or garbage
  }
}

/** Answers an upgrade from a foreign origin 403 and closes the socket. */
function answer403(socket: Duplex): void {
  const body = 'websocket upgrades from another origin are refused\n';
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end(
    'HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Type: text/plain\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** How long a replica that is not ready asks agents to wait (they move to another replica meanwhile). */
const NOT_READY_RETRY_AFTER_SECONDS = 5;

/** Answers an upgrade request 503 with Retry-After and closes the socket. */
function answer503(socket: Duplex, retryAfterSeconds: number, body: string): void {
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 503 Service Unavailable\r\nRetry-After: ${retryAfterSeconds}\r\nConnection: close\r\n` +
      `Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** A fresh nonce for one websocket connection (128 bits from the CSPRNG). */
function sessionNonce(): string {
  return randomBytes(16).toString('base64url');
}

/**
 * Holds what is written to `socket` until the end of this event-loop turn, so that the frames that
 * follow an authenticated handshake (the subscription's `started`, then `ready`) leave in one write:
 * each write to a socket is a syscall and a TCP segment, and in a CPU profile of 4,000 connects the
 * frame writes were the largest single cost (15 % of the server's busy time).
 */
export function coalesceWrites(socket: Duplex): void {
  socket.cork();
  setImmediate(() => socket.uncork());
}

/**
 * Admits websocket upgrades on `/trpc` to `wss` while fewer than `maxHandshakesInProgress` are in
 * progress (from the upgrade request until the agent is authenticated or refused), answering the
 * rest `503` with `Retry-After`, and gives each connection the nonce its proof must sign.
 */
export function websocketAdmission(
  wss: WebSocketServer,
  options: WebsocketAdmissionOptions,
): WebsocketAdmission {
  const { maxHandshakesInProgress, handshakeTimeoutMs, metrics, logger } = options;
  let handshakesInProgress = 0;
  /** Every socket upgraded to a websocket and not yet closed: shutdown must not wait on them for ever. */
  const upgraded = new Set<Duplex>();
  // Its own scope on purpose: a listener made inside the upgrade handler would keep that handler's
  // whole closure context (the request with its headers) alive as long as the session (~1 KB each).
  const trackUpgraded = (socket: Duplex) => {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
  };
  const spreader = new RetryAfterSpreader({ initialRatePerSecond: maxHandshakesInProgress });
  const handshakes = new WeakMap<IncomingMessage, Handshake>();
  const graceMs = options.graceMs ?? HANDSHAKE_GRACE_MS;
  const monotonic = options.monotonic ?? (() => performance.now());
  /**
   * Upgraded sockets waiting for their connectionParams, in the order their wait began (a Map keeps
   * insertion order): the first is the one a newcomer may replace.
   */
  const waiting = new Map<IncomingMessage, { ws: WebSocket; since: number; handshake: Handshake }>();
  let evictedSinceLog = 0;
  let lastEvictedLogAt = Number.NEGATIVE_INFINITY;
  /** Closes the handshake that has waited longest for its connectionParams, if past its grace. */
  const evictOldestWaiting = (): boolean => {
    const oldest = waiting.entries().next();
    if (oldest.done) return false;
    const [req, { ws, since, handshake }] = oldest.value;
    if (monotonic() - since < graceMs) return false;
    waiting.delete(req);
    handshake.end();
    closeWithin(ws, CLOSE_CODES.HANDSHAKE_TIMEOUT, 'connectionParams not sent in time');
    metrics.handshakesEvicted.inc();
    evictedSinceLog++;
    const now = performance.now();
    if (now - lastEvictedLogAt >= SHED_LOG_INTERVAL_MS) {
      logger.warn(
        { evictedSinceLastLog: evictedSinceLog, maxHandshakesInProgress, graceMs },
        'every handshake slot taken: closing those that sent no connectionParams within the grace, for new ones',
      );
      evictedSinceLog = 0;
      lastEvictedLogAt = now;
    }
    return true;
  };
  let shedSinceLog = 0;
  let lastShedLogAt = Number.NEGATIVE_INFINITY;
  let notReadySinceLog = 0;
  let lastNotReadyLogAt = Number.NEGATIVE_INFINITY;
  const refuseNotReady = (socket: Duplex, why: string) => {
    notReadySinceLog++;
    const now = performance.now();
    if (now - lastNotReadyLogAt >= SHED_LOG_INTERVAL_MS) {
      logger.warn({ refusedSinceLastLog: notReadySinceLog, why }, 'not ready: answering new sessions 503');
      notReadySinceLog = 0;
      lastNotReadyLogAt = now;
    }
    answer503(socket, NOT_READY_RETRY_AFTER_SECONDS, `not ready: ${why}; retry later\n`);
  };
  const shed = (socket: Duplex) => {
    metrics.handshakesShed.inc();
    shedSinceLog++;
    const now = performance.now();
    if (now - lastShedLogAt >= SHED_LOG_INTERVAL_MS) {
      logger.warn(
        { shedSinceLastLog: shedSinceLog, maxHandshakesInProgress },
        'too many websocket handshakes in progress; answering new ones 503 with Retry-After',
      );
      shedSinceLog = 0;
      lastShedLogAt = now;
    }
    const retryAfterSeconds = spreader.retryAfterSeconds(handshakesInProgress);
    answer503(socket, retryAfterSeconds, 'too many websocket handshakes in progress; retry later\n');
  };

  // Each connection's own nonce goes out in its 101 response: a proof signs it, so a captured proof
  // is worth nothing on any other connection, before or after a restart. The time lets an agent on a
  // host whose clock is off sign a proof this server finds fresh.
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    const handshake = handshakes.get(req);
    if (!handshake) return;
    headers.push(`${SESSION_NONCE_HEADER}: ${handshake.nonce}`);
    headers.push(`${SERVER_TIME_HEADER}: ${Math.round(options.now())}`);
  });

  return {
    onUpgrade: (req, socket, head) => {
      if ((req.url ?? '').split('?')[0] !== '/trpc') {
        socket.destroy();
        return;
      }
      if (!fromOwnOrigin(req, options.ownOrigin)) {
        answer403(socket);
        return;
      }
      const notReady = options.notReady?.();
      if (notReady) {
        refuseNotReady(socket, notReady);
        return;
      }
      // Every slot taken: the one that has waited longest for its connectionParams, past a grace,
      // makes room (strangers that upgrade and say nothing would otherwise keep agents out for as
      // long as they reopen sockets); if none has, the newcomer is told to come back.
      if (handshakesInProgress >= maxHandshakesInProgress && !evictOldestWaiting()) {
        shed(socket);
        return;
      }
      handshakesInProgress++;
      const handshake: Handshake = {
        timer: undefined,
        nonce: sessionNonce(),
        end: () => {
          if (!handshakes.delete(req)) return;
          waiting.delete(req);
          handshakesInProgress--;
          spreader.noteFinished();
          clearTimeout(handshake.timer);
          socket.off('close', handshake.end);
        },
      };
      handshakes.set(req, handshake);
      // Covers every way out before authentication: a refused upgrade, a client that goes away.
      socket.once('close', handshake.end);
      wss.handleUpgrade(req, socket, head, (ws) => {
        if (!handshakes.has(req)) return;
        trackUpgraded(socket);
        waiting.set(req, { ws, since: monotonic(), handshake });
        options.onUpgraded?.(socket, graceMs);
        handshake.timer = setTimeout(() => {
          closeWithin(ws, CLOSE_CODES.HANDSHAKE_TIMEOUT, 'connectionParams not sent in time');
          handshake.end();
        }, handshakeTimeoutMs);
        handshake.timer.unref();
        wss.emit('connection', ws, req);
      });
    },
    paramsArrived: (req) => {
      // Nothing of the handshake stays with the live session once the verdict is in.
      const handshake = handshakes.get(req);
      if (!handshake) return null;
      clearTimeout(handshake.timer);
      waiting.delete(req);
      return { nonce: handshake.nonce, end: () => handshake.end() };
    },
    inProgress: () => handshakesInProgress,
    destroyUpgraded: () => {
      for (const socket of upgraded) socket.destroy();
    },
  };
}
