import type { ClientRequest, IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import WebSocket from 'ws';
import { isForeignNotFound, isTransientStatus, isTrpcAnswer } from '../shared/api-answers.js';
import { fetchVia } from '../shared/node-fetch.js';
import { SERVER_TIME_HEADER, SESSION_NONCE_HEADER } from '../shared/protocol.js';
import {
  MAX_SERVER_MESSAGE_BYTES,
  MessageBudget,
  noteViolation,
  PROTOCOL_VIOLATION_CLOSE,
  unreadableMessage,
  violationOf,
} from './server-frames.js';

export { describeNetworkError, tlsMisconfiguration } from '../shared/network-errors.js';
export { fetchVia } from '../shared/node-fetch.js';

export interface TransportOptions {
  /**
   * How long one enrollment request, or one websocket opening handshake, may go unanswered before
   * it is abandoned and retried: a connection that stalls must not hang the agent. @default 30000
   */
  requestTimeoutMs?: number;
}

/**
 * The HTTP and websocket transports, trusting a private CA when one is given. Node's global fetch
 * takes no CA option, so with --ca-file requests go through node:https instead. Neither follows a
 * redirect (ws does not either, by default).
 */
export function createTransport(caPem: string | null, options: TransportOptions = {}) {
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  const tls = caPem ? { ca: caPem } : {};
  class AgentWebSocket extends WebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols, {
        ...tls,
        handshakeTimeout: requestTimeoutMs,
        // ws reads messages of up to 100 MiB by default; past this one it closes the socket (1009).
        maxPayload: MAX_SERVER_MESSAGE_BYTES,
      });
      // With a listener here ws leaves the handshake to us: terminate() aborts the request and
      // emits error then close, as ws does on its own, so the tRPC client retries as usual.
      this.once('unexpected-response', (_req: ClientRequest, res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        // The body's first line says why (a replica not ready names its database's trouble): read
        // what arrives with the answer, briefly, then give up the socket.
        let said = '';
        let done = false;
        const refuse = () => {
          if (done) return;
          done = true;
          clearTimeout(wait);
          upgradeRefusals.set(this, {
            status,
            retryAfterMs: BUSY_STATUSES.has(status) ? parseRetryAfterMs(res.headers['retry-after']) : null,
            said: said.split('\n')[0]!.trim().slice(0, 300) || null,
          });
          this.terminate();
        };
        const wait = setTimeout(refuse, REFUSAL_BODY_WAIT_MS);
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (said.length < 1000) said += chunk;
        });
        res.once('end', refuse);
        res.once('error', refuse);
        res.once('close', refuse);
      });
    }
  }
  const AgentWs = AgentWebSocket as unknown as typeof WebSocket;
  // The CA is for https:// servers; an http:// one of the list (loopback, a test) goes as without it.
  const withCa = caPem ? fetchVia(httpsRequest, { ca: caPem }) : null;
  const base: typeof fetch = withCa
    ? (input, init) =>
        urlOf(input).startsWith('https:') ? withCa(input, init) : globalThis.fetch(input, init)
    : globalThis.fetch;
  return { fetch: refusingRedirects(base), WebSocket: AgentWs, requestTimeoutMs };
}

/** The URL a fetch is given, as text. */
function urlOf(input: Parameters<typeof fetch>[0]): string {
  return typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
}

/**
 * The server answered a request with a redirect, which the agent never follows: the request
 * carries a secret (the provisioning key), and the redirect's target passed no --server check.
 */
export class RedirectRefused extends Error {
  constructor(
    readonly status: number,
    /** The Location it pointed to, resolved against the request's URL (null if none or unreadable). */
    readonly location: string | null,
  ) {
    super(
      `the server answered HTTP ${status}, a redirect to ${location ?? '(no Location)'}, which is not followed`,
    );
  }
}

/**
 * An answer that is not the API's: every answer of the enrollment server's API, errors included, is
 * JSON, so another content type comes from something else at that URL (a web site, another
 * service, a proxy's own page). Its body is not read: parsing it only ever said "Unexpected token".
 */
export class NotTheApi extends Error {
  constructor(
    readonly status: number,
    readonly contentType: string | null,
  ) {
    const type = contentType ? ` (${contentType.split(';')[0]!.trim()})` : '';
    super(
      isTransientStatus(status)
        ? `answered HTTP ${status}${type} without the API's answer (the server too busy, or a proxy in front of it)`
        : `answered HTTP ${status}${type}, which is not an answer of the enrollment server's API`,
    );
  }

  /**
   * A proxy's or a gateway's own answer while what is behind it is away or busy (5xx, 408, 425,
   * 429): a retry may get through. Any other status is something else at that URL: final.
   */
  get transient(): boolean {
    return isTransientStatus(this.status);
  }
}

/**
 * The largest answer the agent reads from a server's HTTP API. The largest genuine one, an
 * enrollment's, is under 10 KiB (an identity token the server refuses past 8,192 characters);
 * without a bound a server could send gigabytes, which the agent read whole for the whole request
 * time (30 s), into memory.
 */
export const MAX_ANSWER_BYTES = 256 * 1024;

/** An answer larger than any of the API's: something else at that URL (or a server gone wrong); final. */
export class AnswerTooLarge extends NotTheApi {
  constructor(status: number, contentType: string | null) {
    super(status, contentType);
    const type = contentType ? ` (${contentType.split(';')[0]!.trim()})` : '';
    this.message = `answered HTTP ${status}${type} with more than ${MAX_ANSWER_BYTES / 1024} KiB, which no answer of the enrollment server's API is`;
  }

  override get transient(): boolean {
    return false;
  }
}

/** `response` with its body read into memory, or AnswerTooLarge past MAX_ANSWER_BYTES (said or sent). */
async function bounded(response: Response): Promise<Response> {
  const contentType = response.headers.get('content-type');
  const tooLarge = async () => {
    await response.body?.cancel().catch(() => {});
    return new AnswerTooLarge(response.status, contentType);
  };
  if (Number(response.headers.get('content-length')) > MAX_ANSWER_BYTES) throw await tooLarge();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body?.getReader();
  for (;;) {
    const next = await reader?.read();
    if (!next || next.done) break;
    size += next.value.byteLength;
    if (size > MAX_ANSWER_BYTES) {
      await reader?.cancel().catch(() => {});
      throw new AnswerTooLarge(response.status, contentType);
    }
    chunks.push(next.value);
  }
  // A null-body status (204, 304) takes no body, not even an empty one.
  const body = [101, 204, 205, 304].includes(response.status) ? null : Buffer.concat(chunks);
  return new Response(body, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/** The statuses fetch would follow (Fetch standard, "redirect status"). */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * `base` with redirects never followed (a redirect answer rejects with RedirectRefused), and an
 * answer that is not tRPC's JSON rejected with NotTheApi.
 */
function refusingRedirects(base: typeof fetch): typeof fetch {
  const refusing = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const response = await bounded(await base(input, { ...init, redirect: 'manual' }));
    const contentType = response.headers.get('content-type');
    const redirect = REDIRECT_STATUSES.has(response.status);
    // Of the API's calls (not /healthz), only tRPC's own answers.
    const call = /\/trpc\//.test(new URL(urlOf(input)).pathname);
    if (
      !redirect &&
      contentType?.toLowerCase().includes('json') &&
      !(await isForeignNotFound(response)) &&
      (!call || isTrpcAnswer(await bodyOf(response)))
    )
      return response;
    await response.body?.cancel().catch(() => {});
    if (!redirect) throw new NotTheApi(response.status, contentType);
    const requested = typeof input === 'string' || input instanceof URL ? input : input.url;
    throw new RedirectRefused(response.status, resolveLocation(response.headers.get('location'), requested));
  };
  return refusing as typeof fetch;
}

/** `response`'s body as JSON, read from a copy (null if it is none). */
function bodyOf(response: Response): Promise<unknown> {
  return response
    .clone()
    .json()
    .catch(() => null);
}

function resolveLocation(location: string | null, requested: string | URL): string | null {
  if (!location) return null;
  try {
    return new URL(location, requested).href;
  } catch {
    return null;
  }
}

export type Transport = ReturnType<typeof createTransport>;

const sessionNonces = new WeakMap<object, string>();

/** The server's time in each socket's upgrade answer, with the host's time when it arrived. */
const serverTimes = new WeakMap<object, { serverTime: number; receivedAt: number }>();

/** Sockets that opened (the upgrade succeeded): a close of one that never did was a failed attempt. */
const openedSockets = new WeakSet<object>();

/**
 * Keeps the nonce and the time the server sends in `socket`'s upgrade response, for
 * `sessionNonceOf` and `serverTimeOf`, and whether it opened, for `hasOpened`.
 */
export function captureSessionNonce(socket: WebSocket): void {
  socket.once('upgrade', (res: IncomingMessage) => {
    const nonce = res.headers[SESSION_NONCE_HEADER];
    if (typeof nonce === 'string') sessionNonces.set(socket, nonce);
    const serverTime = Number(res.headers[SERVER_TIME_HEADER]);
    if (Number.isSafeInteger(serverTime) && serverTime > 0)
      serverTimes.set(socket, { serverTime, receivedAt: Date.now() });
  });
  socket.once('open', () => openedSockets.add(socket));
}

/** Whether `socket` (a close event's target) had opened before it closed. */
export function hasOpened(socket: unknown): boolean {
  return typeof socket === 'object' && socket !== null && openedSockets.has(socket);
}

/**
 * The nonce the server made for `socket`'s connection, which its proof must sign; '' when the
 * server sent none (an older server, which does not check it).
 */
export function sessionNonceOf(socket: unknown): string {
  if (!socket || typeof socket !== 'object') return '';
  return sessionNonces.get(socket) ?? '';
}

/** The server's time sent in `socket`'s upgrade answer and when it arrived; null when none came. */
export function serverTimeOf(socket: unknown): { serverTime: number; receivedAt: number } | null {
  if (!socket || typeof socket !== 'object') return null;
  return serverTimes.get(socket) ?? null;
}

/** A websocket upgrade the server answered with something other than 101. */
export interface UpgradeRefusal {
  status: number;
  /** How long the server asked to wait: set only for a busy server (503 or 429 with Retry-After). */
  retryAfterMs: number | null;
  /** The first line of the answer's body (e.g. "not ready: …"), if it had one. */
  said: string | null;
}

/** How long a refused upgrade's body is waited for (it comes with the answer: this is a bound). */
const REFUSAL_BODY_WAIT_MS = 250;

/** Statuses with which a server sheds load and says, in Retry-After, when to come back. */
const BUSY_STATUSES = new Set([429, 503]);
/** A Retry-After beyond this is taken as this: a wrong header must not park the agent for days. */
const MAX_RETRY_AFTER_MS = 3_600_000;
const upgradeRefusals = new WeakMap<object, UpgradeRefusal>();

/** The refusal of the upgrade of `socket` (an error or close event's target), if the server sent one. */
export function upgradeRefusalOf(socket: unknown): UpgradeRefusal | null {
  if (!socket || typeof socket !== 'object') return null;
  return upgradeRefusals.get(socket) ?? null;
}

/** Retry-After as delta-seconds or an HTTP date, in milliseconds (null if absent or unreadable). */
export function parseRetryAfterMs(value: string | undefined, now = Date.now()): number | null {
  const text = value?.trim();
  if (!text) return null;
  const ms = /^\d{1,10}$/.test(text)
    ? Number(text) * 1000
    : /^[A-Za-z]{3}, .* GMT$/.test(text)
      ? Date.parse(text) - now
      : Number.NaN;
  return Number.isNaN(ms) ? null : Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/** The server could not be reached because of a TLS misconfiguration (see tlsMisconfiguration). */
export class TlsMisconfigured extends Error {}

/** A websocket close code in words: `1006` alone tells an operator nothing. */
export function describeCloseCode(code: number | undefined): string {
  const words: Record<number, string> = {
    1000: 'the server ended the session',
    1001: 'the server is going away: stopping or restarting',
    1005: 'the connection closed without a status',
    1006: 'the connection dropped without a close frame: the server stopped, or the network or a proxy cut it',
    1011: 'the server hit an unexpected error',
    1012: 'the server is restarting',
    1013: 'the server is overloaded',
    4401: 'the server refused this identity as signed by a key it never had (IDENTITY_UNKNOWN_SIGNER)',
  };
  if (code === undefined) return 'the connection closed';
  return `${words[code] ?? 'the connection closed'} (code ${code})`;
}

/** How long a close frame the agent sent may go unanswered before the socket is cut. */
export const CLOSE_ANSWER_MS = 2_000;

/**
 * The transport's websocket class, keeping each connection's session nonce for its proof: applied
 * by runSession rather than built into createTransport, so that no transport (a test's, the
 * benchmark's) can leave it out.
 */
export function withSessionNonce(Base: Transport['WebSocket']): Transport['WebSocket'] {
  // The transports' classes take (address, protocols) and add their own options.
  class NonceKeepingWebSocket extends Base {
    private readonly budget = new MessageBudget();

    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols);
      captureSessionNonce(this);
      this.on('error', (error: NodeJS.ErrnoException) => {
        if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH')
          noteViolation(this, `a message over ${MAX_SERVER_MESSAGE_BYTES / 1024} KiB`);
      });
    }

    /**
     * Only messages the agent can read, and not too many, reach tRPC (see server-frames.ts): the
     * first other one is noted, the socket closed (1008) and every later message dropped, so the
     * session link says why and reconnects with a growing backoff.
     */
    override emit(event: string | symbol, ...args: unknown[]): boolean {
      if (event !== 'message') return super.emit(event, ...args);
      if (violationOf(this)) return false;
      const problem =
        unreadableMessage(args[0], args[1] === true) ??
        (this.budget.take() ? null : 'more messages than a server sends (over 100 in 10 s)');
      if (!problem) return super.emit(event, ...args);
      noteViolation(this, problem);
      this.close(PROTOCOL_VIOLATION_CLOSE, 'unreadable or too many messages');
      return false;
    }

    /**
     * tRPC closes a socket whose ping went unanswered with a graceful close, and over a dead link
     * nobody answers the close frame: `ws` then waits 30 s more before the socket counts as closed
     * (a dead link was found after ~90 s, not 60). A close not answered within `CLOSE_ANSWER_MS` is
     * cut instead.
     */
    override close(code?: number, reason?: string | Buffer): void {
      super.close(code, reason);
      if (this.readyState === this.CLOSED) return;
      const cut = setTimeout(() => this.terminate(), CLOSE_ANSWER_MS);
      cut.unref();
      this.once('close', () => clearTimeout(cut));
    }
  }
  return NonceKeepingWebSocket as unknown as Transport['WebSocket'];
}
