import { createServer as createHttpServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { BACKUP_PATH, backupHandler } from '../backup/http-endpoint.js';
import type { Clock } from '../clock.js';
import type { Services } from '../context.js';
import type { Metrics } from '../metrics.js';
import type { ServerConfig } from '../server-config.js';
import type { IdentityAuthority } from '../services/identity.js';
import type { SessionHub } from '../sessions/hub.js';
import type { Store } from '../store/store.js';
import type { ClientAddressOf } from './client-address.js';
import { consoleHandler } from './console-files.js';
import { requestHandler } from './endpoints.js';
import { opsPages, type SocketGauges } from './ops-pages.js';
import { trpcHttpHandler } from './trpc-http.js';

export interface RoutesDeps {
  services: Services;
  hub: SessionHub;
  identity: IdentityAuthority;
  store: Store;
  secret: Buffer;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
  adminKeyFile: string;
  /** Who a request comes from (the TCP peer, or behind a trusted proxy its X-Forwarded-For). */
  clientAddressOf: ClientAddressOf;
  config: Pick<ServerConfig, 'maxBodyBytes' | 'metricsListen' | 'databaseUrl' | 'consoleDir'>;
  socketGauges(): SocketGauges;
  /** Told of a connection whose call carried a valid admin key. */
  adminConnection?: (socket: Socket) => void;
  problems?: () => string[];
}

/**
 * What the main listener answers over plain HTTP (/healthz, the JWKS, /metrics unless it has a
 * listener of its own, the streamed backup, tRPC, the admin console at /) and, with --metrics-listen, the metrics listener.
 */
export function serverRoutes(deps: RoutesDeps): {
  onRequest: ReturnType<typeof requestHandler>;
  metricsServer: Server | null;
} {
  const { services, hub, identity, metrics, logger, config } = deps;
  const serveBackup = backupHandler(services, {
    store: deps.store,
    clock: deps.clock,
    secret: deps.secret,
    signingKeys: () => identity.keyFileContent(),
    adminKeyFile: deps.adminKeyFile,
    clientAddressOf: deps.clientAddressOf,
    logger,
    inDatabase: config.databaseUrl !== null,
  });
  const trpcHandler = trpcHttpHandler({
    services,
    hub,
    logger,
    maxBodyBytes: config.maxBodyBytes,
    clientAddressOf: deps.clientAddressOf,
    ...(deps.problems ? { problems: deps.problems } : {}),
    ...(deps.adminConnection ? { adminConnection: deps.adminConnection } : {}),
  });
  const pages = opsPages({
    sessions: hub,
    identity,
    connectors: services.connectors,
    replicas: services.replicas,
    metrics,
    socketGauges: deps.socketGauges,
    problems: deps.problems,
  });
  const plainPages = { '/healthz': pages.healthz, '/.well-known/jwks.json': pages.jwks };
  // With --metrics-listen, /metrics is served there only: where agents connect it answers 404.
  const onRequest = requestHandler(
    config.metricsListen ? plainPages : { ...plainPages, '/metrics': pages.metrics },
    trpcHandler,
    {
      [BACKUP_PATH]: (req, res) =>
        serveBackup(req, res).catch((error) => {
          logger.error({ err: error }, 'backup failed');
          res.destroy();
        }),
    },
    consoleHandler(config.consoleDir),
  );
  const metricsServer = config.metricsListen
    ? createHttpServer(requestHandler({ '/healthz': pages.healthz, '/metrics': pages.metrics }))
    : null;
  return { onRequest, metricsServer };
}
