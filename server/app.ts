import { createServer as createHttpServer } from 'node:http';
import { join } from 'node:path';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { ensurePrivateDir } from '../shared/private-files.js';
import { BACKUP_PATH, backupHandler } from './backup/http-endpoint.js';
import { type Clock, systemClock } from './clock.js';
import type { Context, Services } from './context.js';
import { type DataFiles, loadTlsPair, openDataFiles } from './data-files.js';
import { agentAuthenticator } from './http/agent-auth.js';
import { ConnectionGuard, connectionLimitsFor } from './http/connection-guard.js';
import { checkCanListen, listen, requestHandler, urlOf } from './http/endpoints.js';
import { createMainServer } from './http/main-server.js';
import { opsPages } from './http/ops-pages.js';
import { openFileLimit } from './http/process-metrics.js';
import { trpcHttpHandler } from './http/trpc-http.js';
import { coalesceWrites, websocketAdmission } from './http/websocket-admission.js';
import { createServerLogger } from './logging.js';
import { createMetrics, type Metrics } from './metrics.js';
import { appRouter } from './router.js';
import type { ServerConfig } from './server-config.js';
import { type Capabilities, createServices } from './services/compose.js';
import { originOf } from './services/identity.js';
import { SecretBox } from './services/secrets.js';
import type { ClusterSessions } from './sessions/cluster-sessions.js';
import { SessionHub } from './sessions/hub.js';
import { SessionRegistry } from './sessions/session-registry.js';
import { lockDataDir } from './store/data-dir-lock.js';

// serve-command.ts loads this module lazily and tells a bad TLS pair from other start-up failures.
export { TlsConfigError } from './data-files.js';

export interface RunningServer {
  url: string;
  port: number;
  /** The metrics listener's /metrics URL with --metrics-listen, else null (/metrics is on `url`). */
  metricsUrl: string | null;
  dataDir: string;
  adminKeyFile: string;
  services: Services;
  hub: SessionHub;
  logger: Logger;
  /** Removes never-connected connectors past the pending TTL now (also runs on a timer). */
  sweepPending(): Promise<string[]>;
  close(): Promise<void>;
}

/** How long a shutdown waits for websockets to finish their close handshake before cutting them. */
const SHUTDOWN_GRACE_MS = 2000;
/** Node's default (511) drops accepts during a reconnect storm; the kernel caps it at somaxconn. */
const LISTEN_BACKLOG = 4096;

/**
 * Builds the services and the session hub over the capabilities: the one place they are wired.
 * The registry of live sessions comes first and depends on nothing, so the services are given it
 * (as their Presence) and the hub, built over the services, fills it.
 */
export function composeServer(
  capabilities: Omit<Capabilities, 'metrics' | 'presence'> & {
    /** The other replicas' sessions; one process alone when absent. */
    cluster?: ClusterSessions;
  },
  config: Parameters<typeof createServices>[1] &
    Partial<
      Pick<
        ServerConfig,
        'maxSessionsPerAddress' | 'handshakeTimeoutMs' | 'sessionsPerTurn' | 'rotationSpreadMs'
      >
    >,
): { services: Services; hub: SessionHub; metrics: Metrics } {
  const { clock, logger, cluster, ...rest } = capabilities;
  const metrics = createMetrics();
  const registry = new SessionRegistry({
    clock,
    metrics,
    maxSessionsPerAddress: config.maxSessionsPerAddress,
    cluster,
  });
  const services = createServices({ ...rest, clock, logger, metrics, presence: registry }, config);
  const hub = new SessionHub({
    registry,
    agentSessions: services.agentSessions,
    connectors: services.connectors,
    events: services.events,
    clock,
    identityTtlMs: config.identityTtlMs,
    metrics,
    logger,
    sessionsPerTurn: config.sessionsPerTurn,
    subscribeTimeoutMs: config.handshakeTimeoutMs,
    rotationSpreadMs: config.rotationSpreadMs,
  });
  return { services, hub, metrics };
}

/** Starts the enrollment server: store, services, HTTP + websocket on one port. */
export async function startServer(
  config: ServerConfig,
  options: { clock?: Clock; logger?: Logger } = {},
): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? createServerLogger(config.logLevel, config.logFormat);

  const tls =
    config.tlsCertFile && config.tlsKeyFile ? await loadTlsPair(config.tlsCertFile, config.tlsKeyFile) : null;
  // A port in use (or one this user may not bind) fails here, before the data dir, its files or a
  // bootstrap key are made: a failed start leaves nothing behind.
  await checkCanListen(config);
  if (config.metricsListen) await checkCanListen(config.metricsListen);
  // Another user's dir could hold links planted to catch the signing key: refused (PrivateDirError).
  await ensurePrivateDir(config.dataDir, { what: 'data dir', flag: '--data-dir' });
  // Before anything is written: a second server on this dir would acknowledge writes that the
  // first one's next compaction silently throws away (DataDirLockedError, nothing written).
  const lock = await lockDataDir(config.dataDir);
  let files: DataFiles;
  try {
    files = await openDataFiles(config, { clock, logger });
  } catch (error) {
    await lock.release();
    throw error;
  }
  const { secret, store, audit, identity } = files;
  const secretBox = new SecretBox(secret);
  const { services, hub, metrics } = composeServer(
    { store, audit, clock, secretBox, identity, logger },
    config,
  );
  const { connectors } = services;

  const adminKeyFile = join(config.dataDir, 'admin.key');
  if (await services.apiKeys.bootstrap(adminKeyFile))
    logger.info({ file: adminKeyFile }, 'bootstrap admin API key written');

  const serveBackup = backupHandler(services, {
    store,
    clock,
    secret,
    signingKeys: () => identity.keyFileContent(),
    adminKeyFile,
  });

  const trpcHandler = trpcHttpHandler({ services, hub, logger, maxBodyBytes: config.maxBodyBytes });

  const pages = opsPages({
    sessions: hub,
    identity,
    connectors,
    metrics,
    socketGauges: () => ({
      handshakesInProgress: admission.inProgress(),
      connectionsOpen: guard.open,
      connectionsUnauthenticated: guard.unauthenticated,
    }),
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
  );
  const metricsServer = config.metricsListen
    ? createHttpServer(requestHandler({ '/healthz': pages.healthz, '/metrics': pages.metrics }))
    : null;

  const server = createMainServer({ tls, headersTimeoutMs: config.headersTimeoutMs }, onRequest);
  const guard = new ConnectionGuard(
    connectionLimitsFor(config.fileLimit === undefined ? await openFileLimit() : config.fileLimit, {
      maxUnauthenticatedPerAddress: config.maxUnauthenticatedPerAddress,
      maxUnauthenticated: config.maxUnauthenticatedConnections,
    }),
    {
      metrics,
      logger,
      plainHttp: !tls,
      retryAfterSeconds: () => 1 + Math.floor(Math.random() * Math.ceil(config.headersTimeoutMs / 1000)),
    },
  );
  // Before HTTP sees the socket, so that a refused one costs no parser.
  server.prependListener('connection', guard.onConnection);

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxWsMessageBytes,
    clientTracking: false,
  });

  const admission = websocketAdmission(wss, {
    maxHandshakesInProgress: config.maxHandshakesInProgress,
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    metrics,
    logger,
  });
  server.on('upgrade', admission.onUpgrade);
  const authenticateAgent = agentAuthenticator({
    services,
    hub,
    logger,
    publicOrigin: config.publicUrl ? originOf(config.publicUrl) : null,
  });
  applyWSSHandler({
    wss,
    router: appRouter,
    maxBatchSize: 10,
    // Agents ping every 45 s, which resets this timer: the server pings only a quiet peer, and cuts
    // it off when it stays silent.
    keepAlive: { enabled: true, pingMs: 60_000, pongWaitMs: 15_000 },
    createContext: async ({ req, res: ws, info }): Promise<Context> => {
      const handshake = admission.paramsArrived(req);
      try {
        const context = await authenticateAgent(req, ws, info.connectionParams, handshake.nonce);
        if (context.agent) {
          guard.authenticated(req.socket);
          coalesceWrites(req.socket);
        }
        return context;
      } finally {
        handshake.end();
      }
    },
  });

  const sweepPending = () => connectors.sweepPending();
  const sweepTimer = setInterval(
    () => sweepPending().catch((error) => logger.error({ err: error }, 'pending sweep failed')),
    Math.min(60_000, Math.max(1000, config.pendingTtlMs / 10)),
  );
  sweepTimer.unref();

  // The metrics listener first: if its address is taken, nothing has started listening.
  let metricsUrl: string | null = null;
  let port: number;
  try {
    metricsUrl =
      metricsServer && config.metricsListen
        ? `${urlOf('http', config.metricsListen.host, await listen(metricsServer, config.metricsListen))}/metrics`
        : null;
    port = await listen(server, config, LISTEN_BACKLOG);
  } catch (error) {
    // A port in use must not leave the data dir held by a server that never ran.
    metricsServer?.close();
    clearInterval(sweepTimer);
    await Promise.allSettled([store.close(), audit.close()]);
    await lock.release();
    throw error;
  }
  const url = config.publicUrl ?? urlOf(tls ? 'https' : 'http', config.host, port);
  // Once listening, the only errors a server emits are failed accepts (EMFILE past the file limit).
  server.on('error', guard.onAcceptError);
  if (metricsUrl) logger.info({ url: metricsUrl }, 'metrics listening');
  logger.info({ url, dataDir: config.dataDir, adminKeyFile }, 'enrollment server listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    metricsUrl,
    dataDir: config.dataDir,
    adminKeyFile,
    services,
    hub,
    logger,
    sweepPending,
    close: () => {
      closing ??= (async () => {
        clearInterval(sweepTimer);
        hub.closeAll();
        wss.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
          metricsServer?.close();
          metricsServer?.closeAllConnections();
          // Sessions were asked to close (1001); a peer that does not finish the close handshake,
          // or a websocket that never subscribed, would otherwise hold the shutdown open.
          setTimeout(admission.destroyUpgraded, SHUTDOWN_GRACE_MS).unref();
        });
        try {
          await store.close();
          await audit.close();
        } finally {
          await lock.release();
        }
        logger.info('enrollment server stopped');
      })();
      return closing;
    },
  };
}
