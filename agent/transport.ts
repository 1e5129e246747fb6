import type { ClientRequest, IncomingMessage } from 'node:http';
import type { RequestOptions } from 'node:https';
import { request as httpsRequest } from 'node:https';
import WebSocket from 'ws';
import { SESSION_NONCE_HEADER } from '../shared/protocol.js';

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

type NodeRequest = (
  url: URL,
  options: RequestOptions,
  onResponse: (res: IncomingMessage) => void,
) => ClientRequest;

/**
 * A `fetch` over node:http or node:https with request options the global fetch cannot take (a CA to
 * trust, a source address). Enough for tRPC's httpLink: method, headers, a string body, abort.
 */
export function fetchVia(request: NodeRequest, extra: RequestOptions): typeof fetch {
  const viaNode = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> =>
    new Promise((resolve, reject) => {
      const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
      const headers = Object.fromEntries(new Headers(init.headers).entries());
      const req = request(url, { ...extra, method: init.method ?? 'GET', headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (typeof value === 'string') responseHeaders.set(name, value);
          }
          resolve(
            new Response(Buffer.concat(chunks), { status: res.statusCode ?? 500, headers: responseHeaders }),
          );
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      init.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')));
      if (init.body) req.write(init.body as string);
      req.end();
    });
  return viaNode as typeof fetch;
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

/**
 * One line on why a request or websocket could not reach the server. Node hides the useful part
 * (e.g. `SELF_SIGNED_CERT_IN_CHAIN`) a few `cause`s deep behind "fetch failed"; certificate
 * problems also say what to do about them.
 */
export function describeNetworkError(error: unknown): string {
  let found: { code?: unknown; message?: unknown } | null = null;
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; message?: unknown; cause?: unknown; error?: unknown };
    if (typeof candidate.code === 'string') found = candidate;
    // A websocket's ErrorEvent carries the error as `error`, fetch as `cause`.
    current = candidate.cause ?? candidate.error;
  }
  const innermost = found ?? (error as { message?: unknown } | null);
  const code = typeof found?.code === 'string' ? found.code : null;
  const message = typeof innermost?.message === 'string' ? innermost.message : String(error);
  const detail = code && !message.includes(code) ? `${code}: ${message}` : message;
  if (code && UNTRUSTED_CERT_CODES.has(code))
    return `TLS: the server's certificate is not trusted (${detail}); if a private CA signed it, pass --ca-file with that CA's certificate`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `TLS: the server's certificate is not for this host name (${detail}); use a --server host name the certificate names`;
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    return `TLS: the server's certificate is outside its validity period (${detail}); check the server's certificate and this host's clock`;
  return detail;
}
