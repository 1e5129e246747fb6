import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { limitedAs } from '../services/addresses.js';
import { ThrottledLines } from '../throttled-lines.js';

/**
 * Why a connection was closed at once instead of being served: a new one past a limit, or
 * (`idle_evicted`) the oldest idle one, to make room for a new one past the total limit.
 */
export type ConnectionRefusal = 'address_limit' | 'unauthenticated_limit' | 'file_limit' | 'idle_evicted';

export interface ConnectionLimits {
  /**
   * Open connections from one source address that carry no authenticated agent session (HTTP
   * requests, upgrades and websockets still in their handshake); generous, because a NAT'd fleet
   * reconnecting shares one address. @default 1024
   */
  maxUnauthenticatedPerAddress: number;
  /**
   * Such connections from all addresses together, well below the open-file limit so that strangers
   * cannot take the descriptors enrolled agents and admins need. @default a quarter of the limit
   */
  maxUnauthenticated: number;
  /**
   * Open connections of any kind past which new ones are refused, so that the server stops short of
   * the process's open-file limit (where the kernel refuses every connection, silently) and keeps
   * descriptors for its own files. Null: no limit known. @default the limit less a reserve
   */
  maxOpen: number | null;
}

export interface ConnectionGuardMetrics {
  connectionsRefused: { inc(labels: { reason: ConnectionRefusal }): void };
  acceptErrors: { inc(labels: { code: string }): void };
}

/** Refusals are logged at most once per interval per reason, with the count since the last line. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** Descriptors kept for the server's own files and listeners: at least this many, or 2 % of the limit. */
const MIN_FILE_RESERVE = 64;

/** Defaults for the limits from the process's open-file limit (null when unknown). */
export function connectionLimitsFor(
  fileLimit: number | null,
  overrides: { maxUnauthenticatedPerAddress?: number; maxUnauthenticated?: number | null } = {},
): ConnectionLimits {
  const maxOpen =
    fileLimit === null ? null : fileLimit - Math.max(MIN_FILE_RESERVE, Math.ceil(fileLimit * 0.02));
  return {
    maxUnauthenticatedPerAddress: overrides.maxUnauthenticatedPerAddress ?? 1024,
    maxUnauthenticated:
      overrides.maxUnauthenticated ?? (fileLimit === null ? 4096 : Math.max(64, Math.floor(fileLimit / 4))),
    maxOpen: maxOpen === null ? null : Math.max(1, maxOpen),
  };
}

interface Pending {
  address: string;
  socket: Socket;
  /**
   * Requests the server is working on over it: from a request's last byte to its answer's end, an
   * upgrade until its 101, a websocket's first message until its verdict.
   */
  busy: number;
  /** Until when (the guard's clock) an idle websocket waiting for its first message is not evicted. */
  graceUntil: number;
}

/**
 * How many of the oldest unauthenticated connections are looked at for an idle one to evict: a
 * bound on the work a refused connection costs when the oldest are all busy.
 */
const EVICTION_SCAN = 256;

/**
 * Bounds what strangers can hold open on the main listener before they authenticate. Every new
 * connection counts as unauthenticated (per source address and in total) until it carries an
 * authenticated agent session; past a limit it is answered at once (`429` for its address's limit,
 * `503` for the total or the file limit, both with `Retry-After`, on a plain-HTTP listener; closed
 * on a TLS one) and closed. How long an unauthenticated connection may be held is bounded by the
 * HTTP header and request timeouts and, after an upgrade, by the websocket handshake timeout.
 *
 * Past the total limit, a new connection first takes the place of the oldest idle one: one the
 * server is not working for but waiting on (headers or a body still arriving, a keep-alive between
 * requests, a websocket whose first message has not come or that was refused and has not answered
 * the close). Strangers spread over many addresses could otherwise fill the total with connections
 * that send nothing more and keep every admin call and health check out (503) for as long as they
 * reopened them; this way such holders are pushed out by whoever comes next, and a request that
 * arrives whole is served. A websocket just upgraded is spared for a grace (`upgraded`): an agent
 * sends its first message one round trip after the 101.
 */
export class ConnectionGuard {
  private readonly pending = new Map<string, Pending>();
  /** Admins' connections between calls (see `adminCall`): counted again at their next request. */
  private readonly admins = new Map<string, Pending>();
  private readonly perAddress = new Map<string, number>();
  private openCount = 0;
  private readonly lines = new ThrottledLines(REFUSAL_LOG_INTERVAL_MS);

  constructor(
    readonly limits: ConnectionLimits,
    private readonly deps: {
      metrics: ConnectionGuardMetrics;
      logger: Logger;
      /** Whether a refusal can be answered in plain HTTP (false on a TLS listener). */
      plainHttp: boolean;
      /** Seconds a refused client is told to wait: holders are cut within the header timeout. */
      retryAfterSeconds: () => number;
      /** A monotonic clock in ms, for the websockets' grace. @default performance.now */
      now?: () => number;
    },
  ) {}

  /** Connections open now, of every kind. */
  get open(): number {
    return this.openCount;
  }

  /** Connections open now that carry no authenticated agent session. */
  get unauthenticated(): number {
    return this.pending.size;
  }

  /** For the listener's `connection` event (prepended, before HTTP sees the socket): admits or refuses it. */
  readonly onConnection = (socket: Socket): void => {
    if (!socket.remoteAddress) {
      socket.destroy(); // gone already
      return;
    }
    const key = keyOf(socket);
    // The kernel took this address and port again, so the connection an entry under the key is for
    // is gone (reset), its close not seen yet: it must not count against this one, nor release it.
    this.release(key);
    this.admins.delete(key);
    const address = normalized(socket.remoteAddress);
    let refusal = this.refusalFor(address);
    if (refusal === 'unauthenticated_limit' && this.evictOldestIdle()) refusal = null;
    if (refusal) {
      this.refuse(socket, refusal);
      return;
    }
    this.openCount++;
    this.pending.set(key, { address, socket, busy: 0, graceUntil: 0 });
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    socket.once('close', () => {
      this.openCount--;
      if (this.pending.get(key)?.socket === socket) this.release(key);
      if (this.admins.get(key)?.socket === socket) this.admins.delete(key);
    });
  };

  /**
   * For the listening server's `error` event: a connection the kernel could not hand over. libuv
   * hides most EMFILE failures (it accepts and closes them with a descriptor it keeps spare); what
   * reaches here is counted and logged instead of crashing the process.
   */
  readonly onAcceptError = (error: NodeJS.ErrnoException): void => {
    const code = error.code ?? 'unknown';
    this.deps.metrics.acceptErrors.inc({ code });
    this.lines.say('accept_error', (count) =>
      this.deps.logger.error(
        { code, failedSinceLastLog: count, open: this.openCount, fileLimitReserveAt: this.limits.maxOpen },
        'cannot accept connections (at the open-file limit?)',
      ),
    );
  };

  /**
   * The server works for `socket` until `requestEnded`: a whole request arrived (an upgrade's
   * headers, a websocket's first message). Not evicted meanwhile.
   */
  requestStarted(socket: Socket): void {
    const entry = this.entryOf(socket);
    if (!entry) return;
    entry.busy++;
    entry.graceUntil = 0;
  }

  /** A request on `socket` was answered (or abandoned). */
  requestEnded(socket: Socket): void {
    const entry = this.entryOf(socket);
    if (entry && entry.busy > 0) entry.busy--;
  }

  /**
   * A request (or an upgrade) began on `socket`: an admin's connection is a stranger's again until
   * this call's key is accepted too (`adminCall`). A key deleted or expired since, or a stranger
   * given the connection of one, must not keep it out of the caps.
   */
  requestArrived(socket: Socket): void {
    const key = keyOf(socket);
    const entry = this.admins.get(key);
    if (!entry) return;
    this.admins.delete(key);
    this.pending.set(key, entry);
    this.perAddress.set(entry.address, (this.perAddress.get(entry.address) ?? 0) + 1);
  }

  /**
   * The call under way on `socket` carried a valid admin key: until its next request the connection
   * is an admin's, out of the unauthenticated count, so newcomers past the cap do not push it out
   * between calls.
   */
  adminCall(socket: Socket): void {
    const key = keyOf(socket);
    const entry = this.pending.get(key);
    if (!entry) return;
    this.release(key);
    this.admins.set(key, entry);
  }

  /**
   * The upgrade on `socket` was answered 101 (ending the request `requestStarted` counted): it now
   * waits for the websocket's first message, idle, but not evicted for `graceMs`.
   */
  upgraded(socket: Socket, graceMs: number): void {
    const entry = this.pending.get(keyOf(socket));
    if (!entry) return;
    if (entry.busy > 0) entry.busy--;
    entry.graceUntil = this.now() + graceMs;
  }

  /** `socket` now carries an authenticated agent session: it no longer counts as unauthenticated. */
  authenticated(socket: Socket): void {
    this.release(keyOf(socket));
  }

  private entryOf(socket: Socket): Pending | undefined {
    const key = keyOf(socket);
    return this.pending.get(key) ?? this.admins.get(key);
  }

  private refusalFor(address: string): ConnectionRefusal | null {
    if (this.limits.maxOpen !== null && this.openCount >= this.limits.maxOpen) return 'file_limit';
    if ((this.perAddress.get(address) ?? 0) >= this.limits.maxUnauthenticatedPerAddress)
      return 'address_limit';
    if (this.pending.size >= this.limits.maxUnauthenticated) return 'unauthenticated_limit';
    return null;
  }

  private now(): number {
    return this.deps.now ? this.deps.now() : performance.now();
  }

  /** Closes the oldest idle unauthenticated connection among the first EVICTION_SCAN; false if none. */
  private evictOldestIdle(): boolean {
    let looked = 0;
    const now = this.now();
    for (const [key, entry] of this.pending) {
      if (++looked > EVICTION_SCAN) break;
      if (entry.busy > 0 || entry.graceUntil > now) continue;
      this.release(key);
      this.deps.metrics.connectionsRefused.inc({ reason: 'idle_evicted' });
      this.logRefusal('idle_evicted');
      entry.socket.destroy();
      return true;
    }
    return false;
  }

  private release(key: string): void {
    const entry = this.pending.get(key);
    if (!entry) return;
    this.pending.delete(key);
    const left = (this.perAddress.get(entry.address) ?? 1) - 1;
    if (left > 0) this.perAddress.set(entry.address, left);
    else this.perAddress.delete(entry.address);
  }

  private refuse(socket: Socket, reason: ConnectionRefusal): void {
    this.deps.metrics.connectionsRefused.inc({ reason });
    this.logRefusal(reason);
    socket.on('error', () => socket.destroy());
    if (!this.deps.plainHttp) {
      socket.destroy();
      return;
    }
    const [status, text] =
      reason === 'address_limit'
        ? ['429 Too Many Requests', 'too many connections from this address; retry later\n']
        : ['503 Service Unavailable', 'too many connections; retry later\n'];
    socket.once('finish', () => socket.destroy());
    socket.end(
      `HTTP/1.1 ${status}\r\nRetry-After: ${this.deps.retryAfterSeconds()}\r\nConnection: close\r\n` +
        `Content-Type: text/plain\r\nContent-Length: ${text.length}\r\n\r\n${text}`,
    );
  }

  private logRefusal(reason: ConnectionRefusal): void {
    this.lines.say(reason, (count) => {
      const { maxUnauthenticatedPerAddress, maxUnauthenticated, maxOpen } = this.limits;
      const limit =
        reason === 'address_limit'
          ? maxUnauthenticatedPerAddress
          : reason === 'unauthenticated_limit' || reason === 'idle_evicted'
            ? maxUnauthenticated
            : maxOpen;
      this.deps.logger.warn(
        {
          reason,
          refusedSinceLastLog: count,
          open: this.openCount,
          unauthenticated: this.pending.size,
          limit,
        },
        MESSAGES[reason],
      );
    });
  }
}

const MESSAGES: Record<ConnectionRefusal, string> = {
  address_limit:
    'refusing new connections from an address that holds too many unauthenticated ones (--max-unauthenticated-per-address)',
  unauthenticated_limit:
    'refusing new connections: too many unauthenticated connections open, none of the oldest idle (--max-unauthenticated-connections)',
  idle_evicted:
    'closing the oldest idle unauthenticated connections to make room for new ones: too many open (--max-unauthenticated-connections)',
  file_limit:
    'refusing new connections: close to the open-file limit (raise it: LimitNOFILE= in the unit, ulimit -n)',
};

/**
 * One TCP connection's identity, the same for a raw socket and the TLS socket over it: both ends,
 * since one peer address and port may hold a connection to each of the server's addresses at once.
 */
function keyOf(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}

/** The key its per-address count uses: an IPv6 address as its /64 (see limitedAs). */
function normalized(address: string | undefined): string {
  if (!address) return 'unknown';
  return limitedAs(address);
}
