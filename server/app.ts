import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { WebSocketServer } from 'ws';
import { DomainError } from '../shared/errors.js';
import { ensurePrivateDir } from '../shared/private-files.js';
import { BACKUP_PATH, backupHandler } from './backup/http-endpoint.js';
import { type Clock, systemClock } from './clock.js';
import { bearerTokenOf, type Context, remoteAddressOf, type Services } from './context.js';
import { loadOrCreateSecret, loadTlsPair } from './data-files.js';
import { agentAuthenticator } from './http/agent-auth.js';
import { ConnectionGuard, connectionLimitsFor } from './http/connection-guard.js';
import {
  checkCanListen,
  listen,
  type Page,
  requestHandler,
  retryAfterMeta,
  urlOf,
} from './http/endpoints.js';
import { openFileLimit, processMetrics } from './http/process-metrics.js';
import { coalesceWrites, websocketAdmission } from './http/websocket-admission.js';
import { createServerLogger } from './logging.js';
import { appRouter } from './router.js';
import { ISSUER, JWKS_MAX_AGE_SECONDS, type ServerConfig } from './server-config.js';
import { FileAuditLog } from './services/audit.js';
import { createServices } from './services/compose.js';
import { IdentityAuthority, originOf } from './services/identity.js';
import { SecretBox } from './services/secrets.js';
import type { SessionHub } from './sessions/hub.js';
import { lockDataDir } from './store/data-dir-lock.js';
import { LowdbStore } from './store/lowdb-store.js';

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
/** An idle keep-alive connection is closed after this (Node's default, said here on purpose). */
const KEEP_ALIVE_TIMEOUT_MS = 5000;

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
  const file = (name: string) => join(config.dataDir, name);

  let store: LowdbStore;
  let audit: FileAuditLog;
  let identity: IdentityAuthority;
  let secret: Buffer;
  try {
    secret = await loadOrCreateSecret(file('secret.key'));
    store = await LowdbStore.open(file('store.json'), {
      onWriteError: (error) => logger.error({ err: error }, 'store write failed; state reloaded from disk'),
    });
    audit = await FileAuditLog.open(file('audit.jsonl'), clock, {
      maxBytes: config.auditMaxBytes,
      keep: config.auditKeep,
      onWriteError: (error) => logger.error({ err: error }, 'audit log write failed'),
    });
    identity = await IdentityAuthority.open(file('signing-keys.json'), { issuer: ISSUER, clock });
  } catch (error) {
    await lock.release();
    throw error;
  }
  const secretBox = new SecretBox(secret);
  const { services, metrics } = createServices({ store, audit, clock, secretBox, identity, logger }, config);
  const { hub, connectors } = services;

  const adminKeyFile = file('admin.key');
  if (await services.apiKeys.bootstrap(adminKeyFile))
    logger.info({ file: adminKeyFile }, 'bootstrap admin API key written');

  const serveBackup = backupHandler(services, {
    store,
    clock,
    secret,
    signingKeys: () => identity.keyFileContent(),
    adminKeyFile,
  });

  const trpcHandler = createHTTPHandler({
    router: appRouter,
    basePath: '/trpc/',
    maxBodySize: config.maxBodyBytes,
    // One call per request keeps limits, audit and errors per call; no client here batches.
    allowBatching: false,
    responseMeta: retryAfterMeta,
    createContext: ({ req }): Context => ({
      services,
      remoteAddress: remoteAddressOf(req),
      bearerToken: bearerTokenOf(req),
      agent: null,
      agentRefusal: 'IDENTITY_INVALID',
    }),
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR' && !(error.cause instanceof DomainError)) {
        logger.error({ err: error.cause ?? error, path }, 'request failed');
      }
    },
  });

  // Process metrics (CPU, memory, event loop, GC, file descriptors) beside the server's own.
  const exposedMetrics = Registry.merge([metrics.registry, processMetrics()]);
  const pages = {
    '/healthz': (): Page => ({
      type: 'application/json',
      body: JSON.stringify({ ok: true, sessions: hub.size }),
    }),
    '/.well-known/jwks.json': (): Page => ({
      type: 'application/json',
      body: JSON.stringify(identity.publicKeySet()),
      cacheControl: `public, max-age=${JWKS_MAX_AGE_SECONDS}`,
    }),
  };
  const metricsPage = async (): Promise<Page> => {
    const counts = connectors.counts();
    for (const state of ['enabled', 'disabled', 'revoked', 'connected', 'disconnected'] as const) {
      metrics.connectors.set({ state }, counts[state]);
    }
    metrics.connectors.set({ state: 'never' }, counts.neverConnected);
    metrics.handshakesInProgress.set(admission.inProgress());
    metrics.connectionsOpen.set(guard.open);
    metrics.connectionsUnauthenticated.set(guard.unauthenticated);
    return { type: exposedMetrics.contentType, body: await exposedMetrics.metrics() };
  };
  // With --metrics-listen, /metrics is served there only: where agents connect it answers 404.
  const onRequest = requestHandler(
    config.metricsListen ? pages : { ...pages, '/metrics': metricsPage },
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
    ? createHttpServer(requestHandler({ '/healthz': pages['/healthz'], '/metrics': metricsPage }))
    : null;

  // How often Node looks for connections past their header or request timeout (its default, 30 s,
  // let half-sent requests stay for up to 45 s with a 15 s timeout).
  const connectionsCheckingInterval = Math.min(1000, config.headersTimeoutMs / 2);
  let server: Server;
  if (tls) {
    server = createHttpsServer({ ...tls, connectionsCheckingInterval }, onRequest) as unknown as Server;
  } else {
    server = createHttpServer({ connectionsCheckingInterval }, onRequest);
  }
  server.headersTimeout = config.headersTimeoutMs;
  server.requestTimeout = Math.max(30_000, config.headersTimeoutMs);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.maxHeadersCount = 64;
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
