import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DomainError } from '../../shared/errors.js';
import { NOT_READY_HEADER } from '../../shared/protocol.js';

/** What one plain (non-tRPC) path answers. */
export interface Page {
  type: string;
  body: string;
  /** @default 'no-store' */
  cacheControl?: string;
  /** @default 200 */
  status?: number;
}

/**
 * One listener's request handler: the given pages by exact path, `/trpc/…` to tRPC when given, the
 * fallback when given (the admin console), and 404 for the rest. The main listener and the metrics listener differ only in what they are given.
 */
export function requestHandler(
  pages: Record<string, () => Page | Promise<Page>>,
  trpc?: (req: IncomingMessage, res: ServerResponse) => void,
  /** Paths answered by a handler of their own (a streamed answer, such as the backup). */
  handlers: Record<string, (req: IncomingMessage, res: ServerResponse) => unknown> = {},
  /** Asked before the 404 (the admin console's files); answers whether it served the request. */
  fallback?: (req: IncomingMessage, res: ServerResponse, path: string) => Promise<boolean>,
) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const page = Object.hasOwn(pages, path) ? pages[path] : undefined;
    if (page) {
      const { type, body, cacheControl = 'no-store', status = 200 } = await page();
      res.writeHead(status, { 'content-type': type, 'cache-control': cacheControl }).end(body);
      return;
    }
    if (trpc && path.startsWith('/trpc/')) return trpc(req, res);
    const handler = Object.hasOwn(handlers, path) ? handlers[path] : undefined;
    if (handler) return handler(req, res);
    if (fallback && (await fallback(req, res, path))) return;
    res
      .writeHead(404, { 'content-type': 'application/json', 'cache-control': 'no-store' })
      .end(JSON.stringify({ error: 'not found' }));
  };
}

/** A `HOST:PORT` listen address (`[::1]:9464` for IPv6). */
export interface ListenAddress {
  host: string;
  port: number;
}

/** Parses `HOST:PORT` / `[IPv6]:PORT`; throws with the expected form. */
export function parseListenAddress(text: string): ListenAddress {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  if (!match || port > 65_535)
    throw new Error(`"${text}" is not a listen address: use HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464`);
  return { host: match[1] ?? match[2]!, port };
}

/** Starts `server` listening; resolves with the port (useful with port 0), rejects on EADDRINUSE etc. */
export function listen(server: Server, address: ListenAddress, backlog?: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: address.port, host: address.host, backlog }, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** `http://host:port` with IPv6 hosts bracketed. */
export function urlOf(scheme: 'http' | 'https', host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * tRPC's `responseMeta`: a call refused with `retryAfterSeconds` (RATE_LIMITED) also says so in a
 * `Retry-After` header, which HTTP clients, proxies and curl users read without parsing the body.
 */
export function retryAfterMeta({ errors }: { errors: readonly { cause?: unknown }[] }): {
  headers?: Record<string, string>;
} {
  for (const { cause } of errors) {
    const seconds = cause instanceof DomainError ? cause.details.retryAfterSeconds : undefined;
    if (typeof seconds === 'number') return { headers: { 'retry-after': String(Math.ceil(seconds)) } };
  }
  return {};
}

/**
 * A replica answers reads from its memory, also while it cannot reach the database; such an answer
 * may miss changes made through other replicas since. Every answer then carries why the replica is
 * not ready in a header, so that a client (the CLI) can say so, and curl -i shows it.
 */
export function notReadyMeta(problems: readonly string[]): { headers?: Record<string, string> } {
  if (problems.length === 0) return {};
  // A header value is printable ASCII on one line; the reasons are English text with a few symbols.
  const reason = problems
    .join('; ')
    .replace(/[^\x20-\x7e]+/g, ' ')
    .slice(0, 500);
  return { headers: { [NOT_READY_HEADER]: reason } };
}

/**
 * Fails the way `listen` would (EADDRINUSE, EACCES) if `address` cannot be listened on now, and
 * holds nothing after: checked before start-up writes anything, so that a port in use leaves a new
 * data dir empty and mints no bootstrap key. Port 0 too: its host may be a name that does not
 * resolve (ENOTFOUND) or an address not on this host (EADDRNOTAVAIL).
 */
export async function checkCanListen(address: ListenAddress): Promise<void> {
  const probe = createServer();
  await listen(probe, address);
  await new Promise<void>((resolve) => probe.close(() => resolve()));
}
