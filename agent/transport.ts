import type { ClientRequest, IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import WebSocket from 'ws';
import { fetchVia } from '../shared/node-fetch.js';
import { SESSION_NONCE_HEADER } from '../shared/protocol.js';

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
      super(address, protocols, { ...tls, handshakeTimeout: requestTimeoutMs });
      // With a listener here ws leaves the handshake to us: terminate() aborts the request and
      // emits error then close, as ws does on its own, so the tRPC client retries as usual.
      this.once('unexpected-response', (_req: ClientRequest, res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        upgradeRefusals.set(this, {
          status,
          retryAfterMs: BUSY_STATUSES.has(status) ? parseRetryAfterMs(res.headers['retry-after']) : null,
        });
        this.terminate();
      });
    }
  }
  const AgentWs = AgentWebSocket as unknown as typeof WebSocket;
  const base = caPem ? fetchVia(httpsRequest, { ca: caPem }) : globalThis.fetch;
  return { fetch: refusingRedirects(base), WebSocket: AgentWs, requestTimeoutMs };
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

/** The statuses fetch would follow (Fetch standard, "redirect status"). */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** `base` with redirects never followed: a redirect answer rejects with RedirectRefused. */
function refusingRedirects(base: typeof fetch): typeof fetch {
  const refusing = async (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const response = await base(input, { ...init, redirect: 'manual' });
    if (!REDIRECT_STATUSES.has(response.status)) return response;
    await response.body?.cancel().catch(() => {});
    const requested = typeof input === 'string' || input instanceof URL ? input : input.url;
    throw new RedirectRefused(response.status, resolveLocation(response.headers.get('location'), requested));
  };
  return refusing as typeof fetch;
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

/** Keeps the nonce the server sends in `socket`'s upgrade response, for `sessionNonceOf`. */
export function captureSessionNonce(socket: WebSocket): void {
  socket.once('upgrade', (res: IncomingMessage) => {
    const nonce = res.headers[SESSION_NONCE_HEADER];
    if (typeof nonce === 'string') sessionNonces.set(socket, nonce);
  });
}

/**
 * The nonce the server made for `socket`'s connection, which its proof must sign; '' when the
 * server sent none (an older server, which does not check it).
 */
export function sessionNonceOf(socket: unknown): string {
  if (!socket || typeof socket !== 'object') return '';
  return sessionNonces.get(socket) ?? '';
}

/** A websocket upgrade the server answered with something other than 101. */
export interface UpgradeRefusal {
  status: number;
  /** How long the server asked to wait: set only for a busy server (503 or 429 with Retry-After). */
  retryAfterMs: number | null;
}

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

/** TLS verification failures meaning "this certificate is not signed by a CA the agent trusts". */
const UNTRUSTED_CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** The innermost error with a string `code` under `error` (fetch nests it in `cause`, a websocket's ErrorEvent in `error`). */
function innermostCoded(error: unknown): { code: string | null; message: string } {
  let found: { code?: unknown; message?: unknown } | null = null;
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; message?: unknown; cause?: unknown; error?: unknown };
    if (typeof candidate.code === 'string') found = candidate;
    current = candidate.cause ?? candidate.error;
  }
  const innermost = found ?? (error as { message?: unknown } | null);
  const raw = typeof innermost?.message === 'string' ? innermost.message : String(error);
  // OpenSSL's messages end in a newline and name its source files: one line, without those.
  const message = raw
    .replace(/:\.\.\/deps\/openssl\/\S*/g, '')
    .replace(/\s+/g, ' ')
    .trim();
  return { code: typeof found?.code === 'string' ? found.code : null, message };
}

/** What a TLS client sees when the server answers its hello in plain HTTP. */
function isPlainTextAnswer(code: string | null, message: string): boolean {
  return (
    code === 'ERR_SSL_WRONG_VERSION_NUMBER' ||
    code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' ||
    /wrong version number|packet length too long/i.test(message)
  );
}

/** The names a certificate holds, from Node's "… is not in the cert's altnames: DNS:a, DNS:b" message. */
function certificateNames(message: string): string[] {
  // The last list in the message: Node says "altnames:" twice, the names follow the second.
  const list = /.*(?:altnames|cert's list): (.*)$/.exec(message)?.[1] ?? '';
  return list
    .split(',')
    .map((name) => name.trim().replace(/^(?:DNS|IP Address):/, ''))
    .filter((name) => name && !name.includes('*'));
}

/** `server` with its host replaced, or its scheme (for a server that speaks plain HTTP). */
function withUrl(server: string, change: { hostname?: string; protocol?: string }): string {
  try {
    const url = new URL(server);
    if (change.hostname) url.hostname = change.hostname;
    let text = url.href.replace(/\/$/, '');
    if (change.protocol) text = text.replace(/^https:/, change.protocol);
    return text;
  } catch {
    return server;
  }
}

/**
 * A TLS failure that no retry can fix — the certificate is not trusted, is for another name, or
 * the server does not speak TLS at all — as one line with the fix; null for anything else. The
 * agent stops on these with exit 2 instead of retrying for ever.
 */
export function tlsMisconfiguration(error: unknown, server: string): string | null {
  const { code, message } = innermostCoded(error);
  if (code && UNTRUSTED_CERT_CODES.has(code))
    return (
      `TLS: the certificate of ${server} is not trusted (${code}). If a private CA signed it, pass ` +
      "--ca-file with that CA's certificate (PEM); otherwise the server needs a certificate from a public CA."
    );
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = certificateNames(message);
    const host = (() => {
      try {
        return new URL(server).hostname;
      } catch {
        return server;
      }
    })();
    return (
      `TLS: the certificate of ${server} is not for ${host}` +
      (names.length
        ? ` but for ${names.join(', ')}; use --server ${withUrl(server, { hostname: names[0]! })}`
        : '') +
      ' (a --server host name the certificate names).'
    );
  }
  if (server.startsWith('https:') && isPlainTextAnswer(code, message))
    return (
      `TLS: ${server} answered in plain text, not TLS: it serves http://, not https://. Use ` +
      `--server ${withUrl(server, { protocol: 'http:' })} if that server really is plain HTTP (off loopback ` +
      'also --allow-insecure), or the URL of its TLS port.'
    );
  return null;
}

/** The server could not be reached because of a TLS misconfiguration (see tlsMisconfiguration). */
export class TlsMisconfigured extends Error {}

/**
 * One line on why a request or websocket could not reach the server. Node hides the useful part
 * (e.g. `SELF_SIGNED_CERT_IN_CHAIN`) a few `cause`s deep behind "fetch failed"; certificate
 * problems also say what to do about them.
 */
export function describeNetworkError(error: unknown): string {
  const { code, message } = innermostCoded(error);
  const detail = code && !message.includes(code) ? `${code}: ${message}` : message;
  if (code && UNTRUSTED_CERT_CODES.has(code))
    return `TLS: the server's certificate is not trusted (${detail}); if a private CA signed it, pass --ca-file with that CA's certificate`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `TLS: the server's certificate is not for this host name (${detail}); use a --server host name the certificate names`;
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    return `TLS: the server's certificate is outside its validity period (${detail}); check the server's certificate and this host's clock`;
  return detail;
}

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
  };
  if (code === undefined) return 'the connection closed';
  return `${words[code] ?? 'the connection closed'} (code ${code})`;
}

/**
 * The transport's websocket class, keeping each connection's session nonce for its proof: applied
 * by runSession rather than built into createTransport, so that no transport (a test's, the
 * benchmark's) can leave it out.
 */
export function withSessionNonce(Base: Transport['WebSocket']): Transport['WebSocket'] {
  // The transports' classes take (address, protocols) and add their own options.
  class NonceKeepingWebSocket extends Base {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols);
      captureSessionNonce(this);
    }
  }
  return NonceKeepingWebSocket as unknown as Transport['WebSocket'];
}
