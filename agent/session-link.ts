import { type ErrorReason, isErrorReason } from '../shared/errors.js';
import { CLOSE_CODES, isFinalCloseCode, replacingAddressOf } from '../shared/protocol.js';
import { tlsPortAsPlainHttp } from '../shared/tls-probe.js';
import { fullJitterDelayMs } from './backoff.js';
import { EXIT } from './exit-codes.js';
import { FailedAttempts, type RetryNotice } from './failed-attempts.js';
import type { AgentLogger } from './log.js';
import type { ServerClock } from './server-clock.js';
import { violationOf } from './server-frames.js';
import type { ServerRotation } from './servers.js';
import {
  describeCloseCode,
  describeNetworkError,
  hasOpened,
  tlsMisconfiguration,
  upgradeRefusalOf,
} from './transport.js';

/** How a session ends from what its link saw (session.ts's `finish`). */
export type LinkEnding = 'replaced' | 'misconfigured' | 'stopped';

export interface SessionLinkOptions {
  logger: AgentLogger;
  servers: ServerRotation;
  serverClock: ServerClock;
  /** When the identity in use expires (ISO): no retry waits past half of what is left of it. */
  identityExpiresAt: () => string;
  /** Unenrolling: a failed connect ends it (exit 10) instead of a retry. */
  unenrolling: boolean;
  connectedOnce: () => boolean;
  finished: () => boolean;
  /** The socket in use (tRPC's), to tell it from an older one a reconnect replaced. */
  currentSocket: () => unknown;
  /** Ends the session with `code` (see session.ts's `finish`). */
  stop: (code: number, ending: LinkEnding, detail: string) => void;
  /** A final refusal (revoked, deleted, unknown identity, bad proof): session.ts's `onFinalReason`. */
  finalReason: (reason: ErrorReason) => void;
  /** The link dropped or an attempt failed, for the status file. */
  disconnected: (detail: string) => void;
}

/**
 * What a session's websocket link does between sessions: it reads why each attempt failed or each
 * session closed (tRPC's onError and onClose), stops for what time does not fix (a TLS mistake, a
 * replaced or refused identity), says the rest sparingly (FailedAttempts), and picks each retry's
 * delay (the server's hint, else full-jitter backoff) and which replica the next attempt goes to.
 */
export class SessionLink {
  private readonly failures = new FailedAttempts();
  /**
   * Sessions a server ended by sending what no server sends (server-frames.ts). Never reset by a
   * session: a server that answers `ready` and then breaks the protocol would otherwise be
   * reconnected to within a second, for ever, with a log line each time.
   */
  private readonly violations = new FailedAttempts();
  private readonly violationsSaid = new WeakSet<object>();
  /** Sockets hung up on for a `ready` that did not come in time (see noReady). */
  private readonly readyMissed = new WeakSet<object>();
  /** Why the socket just failed, from its error event, for the close event that follows. */
  private lastSocketError: string | null = null;
  /** What to say about the retry about to be scheduled: said by retryDelayMs, which knows the delay. */
  private notices: RetryNotice[] = [];
  private retryAfterMs = 0;
  /** A busy server answers each upgrade 503 with Retry-After until it has room: said once until connected. */
  private busySaid = false;
  private readonly tlsProbed = new Set<string>();
  /** The next attempt goes to the next replica (the same server when there is one). */
  private moveOn = false;
  /**
   * Servers passed over since the last session: they refused this agent's proof (PROOF_INVALID) or
   * failed its TLS checks (an untrusted or misnamed certificate, plain text on an https URL).
   */
  private readonly passedOver = new Set<string>();
  /** Servers an unenroll could not reach (it tries each of the list once). */
  private readonly unreachableServers = new Set<string>();

  constructor(private readonly o: SessionLinkOptions) {}

  /** The URL of the next attempt's server. */
  nextServer(): string {
    if (this.moveOn) this.o.servers.next();
    this.moveOn = false;
    return this.o.servers.current;
  }

  /** A session began: failures and the busy notice start afresh. */
  connected(): void {
    this.failures.connected();
    this.busySaid = false;
    this.passedOver.clear();
  }

  /**
   * The server in use refused this agent's proof (PROOF_INVALID): the URL it was told it is reached
   * by (its --public-url) is another one. With several servers one misconfigured replica must not
   * stop the agent: the next one is tried (see `passOver`). True while another server is left to try.
   */
  proofRefused(socket?: unknown): boolean {
    const server = this.serverOf(socket) ?? this.o.servers.current;
    return this.passOver(
      server,
      `${server} refused this agent's proof (PROOF_INVALID): that server's --public-url is not ${server}`,
      'a server refused the proof; trying the next one',
    );
  }

  /** Whether every server of the list has been passed over since the last session. */
  everyServerPassedOver(): boolean {
    return this.passedOver.size >= this.o.servers.servers.length;
  }

  /**
   * One server of the list is misconfigured (its proof URL, its TLS): a fix on that server, which
   * must not stop an agent that other servers would take. The next one is tried; the problem is
   * final only once every server of the list has been passed over since the last session. Said at
   * once, once per server, and counted as a failed attempt (the backoff grows). True while another
   * server is left to try.
   */
  private passOver(server: string, problem: string, said: string): boolean {
    const first = !this.passedOver.has(server);
    this.passedOver.add(server);
    if (this.everyServerPassedOver()) return false;
    if (first) {
      // The next attempt goes elsewhere, unless it already does (the reconnect may have begun).
      if (server === this.o.servers.current) this.moveOn = true;
      this.failures.failed(problem, problem);
      this.o.logger.warn(said, { error: problem });
    }
    return true;
  }

  /** The server of the list a socket was opened to (tRPC may be on the next one by the time it closes). */
  private serverOf(socket: unknown): string | undefined {
    const url = (socket as { url?: unknown } | undefined)?.url;
    if (typeof url !== 'string') return undefined;
    // tRPC adds its own query (`?connectionParams=1`) to the URL it is given.
    const base = url.split('?')[0];
    return this.o.servers.servers.find((server) => `${server.replace(/^http/, 'ws')}/trpc` === base);
  }

  /**
   * The server's hint (a rate-limited close's `retry-after=N`, a busy server's Retry-After) is
   * followed, plus up to a second of jitter: a busy server already spreads its crowd over the
   * time it needs, and adding a growing backoff on top left it idle while agents waited.
   * Either way, never past half the identity's remaining life: a server back before the identity
   * runs out must see the agent in time to renew it, not after a backoff that outlived it.
   */
  retryDelayMs(attempt: number): number {
    const hint = this.retryAfterMs;
    this.retryAfterMs = 0;
    // tRPC counts attempts from the last socket that opened: a server that opens the socket, then
    // refuses the identity (a stranger's IDENTITY_UNKNOWN_SIGNER), would be retried within a
    // second for ever. The failures since the last session grow the backoff too.
    const delay =
      hint > 0
        ? hint + fullJitterDelayMs(0)
        : fullJitterDelayMs(Math.max(attempt, this.failures.attempts - 1, this.violations.attempts - 1));
    const left = Date.parse(this.o.identityExpiresAt()) - this.o.serverClock.now();
    const chosen = left > 0 ? Math.min(delay, Math.floor(left / 2)) : delay;
    if (!this.o.finished())
      for (const notice of this.notices)
        this.o.logger.warn(`${notice.message} in ${(chosen / 1000).toFixed(1)} s`, notice.fields);
    this.notices = [];
    return chosen;
  }

  /**
   * The server of `socket` took the session but sent no `ready` within `waitedMs`: the agent hangs
   * up, and the next attempt goes to the next server of the list, with the backoff of a failed
   * attempt. Said in one line, with the retry's delay.
   */
  noReady(socket: object, waitedMs: number): void {
    this.readyMissed.add(socket);
    this.moveOn = true;
    const problem = `${this.serverOf(socket) ?? this.o.servers.current} took the session but sent no ready within ${waitedMs / 1000} s`;
    this.attemptFailed(
      problem,
      'the server did not say the session is ready; hung up, trying the next server',
    );
    this.o.disconnected(problem);
  }

  /** tRPC's onError: an attempt that failed (refused upgrade, network, TLS). */
  socketError(event: unknown): void {
    const { logger } = this.o;
    if (this.o.finished()) return;
    const target = (event as { target?: unknown } | undefined)?.target;
    if (this.brokeProtocol(target)) return;
    const refusal = upgradeRefusalOf(target);
    const unenrollingFirst = this.o.unenrolling && !this.o.connectedOnce();
    if (refusal?.retryAfterMs != null && unenrollingFirst) {
      const wait = Math.ceil(refusal.retryAfterMs / 1000);
      this.unreachable(
        `the server is busy (HTTP ${refusal.status}, it asks to be tried again in ${wait} s)`,
        `${this.o.servers.current} is busy (HTTP ${refusal.status}, it asks to be tried again in ${wait} s)`,
      );
      return;
    }
    if (refusal?.retryAfterMs != null) {
      this.retryAfterMs = refusal.retryAfterMs;
      // A replica that cannot use its database says "not ready: <why>"; anything else is load.
      if (!this.busySaid)
        logger.warn(
          refusal.said?.startsWith('not ready')
            ? 'the server is not ready; retrying after the time it asked for'
            : 'the server is busy; retrying after the time it asked for',
          {
            status: refusal.status,
            ...(refusal.said ? { said: refusal.said } : {}),
            retryAfterSeconds: Math.ceil(refusal.retryAfterMs / 1000),
          },
        );
      this.busySaid = true;
      return;
    }
    const cause = (event as { error?: unknown } | undefined)?.error ?? event;
    // Not something time fixes: stop with the fix rather than retry for ever.
    const tls = refusal ? null : tlsMisconfiguration(cause, this.o.servers.current);
    if (tls) {
      if (this.passOver(this.o.servers.current, tls, 'a server failed the TLS checks; trying the next one'))
        return;
      logger.error(tls);
      this.o.stop(EXIT.USAGE, 'misconfigured', tls);
      return;
    }
    const problem = refusal
      ? `the server answered HTTP ${refusal.status} instead of opening a websocket`
      : describeNetworkError(cause);
    if (!refusal) void this.stopIfTlsPort(cause);
    if (unenrollingFirst) {
      this.unreachable(problem);
      return;
    }
    this.lastSocketError = problem;
    this.attemptFailed(problem, 'cannot connect; retrying');
  }

  /** tRPC's onClose: a session (or an attempt) ended; final codes end the agent's run. */
  socketClosed(cause: unknown): void {
    const event = cause as { code?: number; reason?: string | Buffer; target?: unknown } | undefined;
    const code = event?.code;
    const reason = event?.reason ? String(event.reason) : '';
    if (isFinalCloseCode(code)) {
      if (code === CLOSE_CODES.REPLACED) {
        this.replaced(event?.target, reason);
        return;
      }
      if (reason === 'PROOF_INVALID' && !this.o.finished() && this.proofRefused(event?.target)) {
        this.o.disconnected(
          `${this.serverOf(event?.target) ?? this.o.servers.current} refused the proof (PROOF_INVALID)`,
        );
        return;
      }
      this.o.finalReason(
        isErrorReason(reason)
          ? reason
          : code === CLOSE_CODES.REVOKED
            ? 'CONNECTOR_REVOKED'
            : 'IDENTITY_INVALID',
      );
      return;
    }
    if (this.o.finished()) return;
    if (this.o.unenrolling && !this.o.connectedOnce()) {
      this.unreachable(this.lastSocketError ?? describeCloseCode(code));
      return;
    }
    this.moveOn = true;
    if (this.brokeProtocol(event?.target)) return;
    // Said by noReady, which hung up.
    if (event?.target && this.readyMissed.has(event.target as object)) {
      this.lastSocketError = null;
      return;
    }
    // Not final (e.g. RATE_LIMITED, handshake timeout): say why, then retry with backoff.
    const hint = /retry-after=(\d{1,6})/.exec(reason);
    if (hint) this.retryAfterMs = Math.min(Number(hint[1]) * 1000, 3_600_000);
    // A refused upgrade was never a session: socketError said why.
    const refusal = upgradeRefusalOf(event?.target);
    const why = this.lastSocketError ?? describeCloseCode(code);
    this.lastSocketError = null;
    if (code === CLOSE_CODES.SIGNER_UNKNOWN)
      this.attemptFailed(
        `${this.o.servers.current} does not know the key that signed this identity (IDENTITY_UNKNOWN_SIGNER): it is not the server of the deployment that enrolled this host, or it lost its signing keys (a new data dir; a replica started without its database URL). Check --server and that server`,
        'the server refused this identity as not its own; keeping it and retrying',
      );
    else if (code !== undefined && code >= 4000)
      this.notices.push({
        message: 'the server closed the session for now; retrying',
        fields: {
          code,
          reason,
          ...(this.retryAfterMs > 0 ? { retryAfterSeconds: this.retryAfterMs / 1000 } : {}),
        },
      });
    // Only a socket that had opened was a session (tRPC's reconnect may overlap an old socket and
    // a new one, so this is asked of the socket that closed): one that never did was a failed
    // attempt, said by socketError.
    else if (this.o.connectedOnce() && !refusal && hasOpened(event?.target))
      this.notices.push({ message: 'disconnected; reconnecting', fields: { cause: why } });
    this.o.disconnected(refusal ? `upgrade answered HTTP ${refusal.status}` : why);
  }

  /**
   * Whether `socket` was closed because its server sent what no server sends (server-frames.ts): said
   * once per socket, at its error or its close, whichever comes first (tRPC schedules the retry at
   * the first, and the notice is said with the retry's delay).
   */
  private brokeProtocol(socket: unknown): boolean {
    const violation = violationOf(socket);
    if (!violation) return false;
    if (this.violationsSaid.has(socket as object)) return true;
    this.violationsSaid.add(socket as object);
    this.moveOn = true;
    this.lastSocketError = null;
    const problem = `${this.serverOf(socket) ?? this.o.servers.current} sent ${violation}`;
    const notice = this.violations.failed(
      problem,
      'the server sent what no enrollment server sends; hung up, reconnecting',
    );
    if (notice) this.notices.push(notice);
    this.o.disconnected(problem);
    return true;
  }

  /**
   * Another agent with this identity took the session. It keeps its identity (the genuine host may
   * be this one) and exits 6, which is not restarted, so two clones do not take the session from
   * each other for ever.
   */
  private replaced(socket: unknown, reason: string): void {
    // Only the socket in use matters: an old one replaced by our own reconnect is expected.
    if (socket && socket !== this.o.currentSocket()) return;
    const other = replacingAddressOf(reason) ?? 'an unknown address';
    this.o.logger.error(
      `another agent with this identity connected from ${other} and replaced this one; stopping. ` +
        'The identity is in use elsewhere: on a copied host, remove its identity.json and enroll it anew; if it leaked, revoke the connector.',
      { replacedBy: other },
    );
    this.o.stop(EXIT.IDENTITY_IN_USE, 'replaced', `replaced by a session from ${other}`);
  }

  /**
   * An `http://` server whose connection was cut without an answer may be a TLS port (the server
   * moved to https): probed once per server, and if so the agent stops with the fix (exit 2), as
   * enrollment does, rather than retry for ever.
   */
  private async stopIfTlsPort(cause: unknown): Promise<void> {
    const server = this.o.servers.current;
    if (this.tlsProbed.has(server)) return;
    this.tlsProbed.add(server);
    const tls = await tlsPortAsPlainHttp(cause, server);
    if (!tls || this.o.finished()) return;
    const said = `TLS: ${tls} as --server (with --allow-server-change)`;
    if (this.passOver(server, said, 'a server answered in plain text on an https URL; trying the next one'))
      return;
    this.o.logger.error(said);
    this.o.stop(EXIT.USAGE, 'misconfigured', said);
  }

  /** A failed attempt, said (or not) when the retry's delay is known: see FailedAttempts. */
  private attemptFailed(problem: string, first: string): void {
    const notice = this.failures.failed(problem, first);
    if (notice) this.notices.push(notice);
  }

  /**
   * An unenroll's connect failed (unreachable, or busy): nothing changed there. The next server of
   * the list is tried, and only once every one has failed (or was passed over) does it stop, exit 10.
   * It tried one, at random, and gave up while others could delete.
   */
  private unreachable(problem: string, said = `cannot reach ${this.o.servers.current}: ${problem}`): void {
    const server = this.o.servers.current;
    // The same failed attempt, told twice (its error, then its close).
    if (this.unreachableServers.has(server) && this.moveOn) return;
    this.unreachableServers.add(server);
    // A server passed over (its TLS, its proof URL) was tried too: it would fail the same way again.
    const tried = (other: string) => this.unreachableServers.has(other) || this.passedOver.has(other);
    if (!this.o.servers.servers.every(tried)) {
      this.o.logger.warn(`${said}; trying the next server`);
      this.moveOn = true;
      return;
    }
    this.o.logger.error(said);
    this.o.stop(EXIT.SERVER_UNREACHABLE, 'stopped', problem);
  }
}
