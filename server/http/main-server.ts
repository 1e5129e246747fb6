import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';

/** An idle keep-alive connection is closed after this (Node's default, said here on purpose). */
const KEEP_ALIVE_TIMEOUT_MS = 5000;

/**
 * How long after the header timeout a request's body may still be arriving. Bodies are at most
 * 64 KiB; a request whose headers are complete counts as busy, which the connection guard never
 * evicts, and with 30 s (as it was) a few addresses trickling bodies held every unauthenticated slot.
 */
const BODY_ALLOWANCE_MS = 5000;

export interface MainServerOptions {
  /** The --tls-cert / --tls-key pair, read and checked; null serves plain HTTP. */
  tls: { cert: Buffer; key: Buffer } | null;
  headersTimeoutMs: number;
}

/** The HTTP(S) server agents and admins reach, with the timeouts that bound half-sent requests. */
export function createMainServer(
  { tls, headersTimeoutMs }: MainServerOptions,
  onRequest: RequestListener,
): Server {
  // How often Node looks for connections past their header or request timeout (its default, 30 s,
  // let half-sent requests stay for up to 45 s with a 15 s timeout).
  const connectionsCheckingInterval = Math.min(1000, headersTimeoutMs / 2);
  let server: Server;
  if (tls) {
    server = createHttpsServer({ ...tls, connectionsCheckingInterval }, onRequest) as unknown as Server;
  } else {
    server = createHttpServer({ connectionsCheckingInterval }, onRequest);
  }
  server.headersTimeout = headersTimeoutMs;
  server.requestTimeout = headersTimeoutMs + BODY_ALLOWANCE_MS;
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.maxHeadersCount = 64;
  return server;
}
