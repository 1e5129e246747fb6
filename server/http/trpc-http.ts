import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import type { Logger } from 'pino';
import { DomainError, ERROR_REASONS } from '../../shared/errors.js';
import { bearerTokenOf, type Context, type Services } from '../context.js';
import { appRouter } from '../router.js';
import type { SessionHub } from '../sessions/hub.js';
import type { ClientAddressOf } from './client-address.js';
import { notReadyMeta, retryAfterMeta } from './endpoints.js';

export interface TrpcHttpOptions {
  services: Services;
  hub: SessionHub;
  logger: Logger;
  maxBodyBytes: number;
  clientAddressOf: ClientAddressOf;
  /** Why this replica is not ready (its database out of reach, its change feed behind); none when ready. */
  problems?: () => string[];
  /** Told of a connection whose call carried a valid admin key (it is no stranger's from then on). */
  adminConnection?: (socket: Socket) => void;
}

/** tRPC over plain HTTP (`/trpc/…`): admin calls and enrollment; never an agent's session. */
export function trpcHttpHandler(options: TrpcHttpOptions) {
  const handler = trpcHandler(options);
  return (req: IncomingMessage, res: ServerResponse) => {
    // tRPC takes queries by GET and mutations by POST; it answered any other method with its own
    // errors (TRACE: a 500 and an error line with a stack, for anyone who sent one).
    if (!CALL_METHODS.has(req.method ?? '')) {
      const { message, hint } = ERROR_REASONS.METHOD_NOT_ALLOWED;
      const data = { code: 'METHOD_NOT_SUPPORTED', httpStatus: 405, reason: 'METHOD_NOT_ALLOWED', hint };
      res
        .writeHead(405, {
          allow: 'GET, HEAD, POST',
          'content-type': 'application/json',
          'cache-control': 'no-store',
        })
        .end(JSON.stringify({ error: { message, code: -32005, data } }));
      return;
    }
    handler(req, res);
  };
}

/** The methods a tRPC call comes by (HEAD: a GET without its body). */
const CALL_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST']);

function trpcHandler({
  services,
  hub,
  logger,
  maxBodyBytes,
  clientAddressOf,
  problems,
  adminConnection,
}: TrpcHttpOptions) {
  return createHTTPHandler({
    router: appRouter,
    basePath: '/trpc/',
    maxBodySize: maxBodyBytes,
    // One call per request keeps limits, audit and errors per call; no client here batches.
    allowBatching: false,
    responseMeta: (opts) => {
      const headers = { ...retryAfterMeta(opts).headers, ...notReadyMeta(problems?.() ?? []).headers };
      return Object.keys(headers).length > 0 ? { headers } : {};
    },
    createContext: ({ req }): Context => ({
      services,
      hub,
      remoteAddress: clientAddressOf(req),
      bearerToken: bearerTokenOf(req),
      agent: null,
      agentRefusal: 'IDENTITY_INVALID',
      ...(adminConnection ? { adminAuthenticated: () => adminConnection(req.socket) } : {}),
    }),
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR' && !(error.cause instanceof DomainError)) {
        logger.error({ err: error.cause ?? error, path }, 'request failed');
      }
    },
  });
}
