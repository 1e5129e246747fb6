import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { openServerState } from './bootstrap.js';
import { type Clock, systemClock } from './clock.js';
import type { Services } from './context.js';
import { attachAgentWebsockets } from './http/agent-websockets.js';
import { clientAddressResolver } from './http/client-address.js';
import { ConnectionGuard, connectionLimitsFor } from './http/connection-guard.js';
import { CONSOLE_DIR } from './http/console-files.js';
import { listen, urlOf } from './http/endpoints.js';
import { createMainServer } from './http/main-server.js';
import { openFileLimit } from './http/process-metrics.js';
import { serverRoutes } from './http/routes.js';
import { createServerLogger } from './logging.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { ServerConfig } from './server-config.js';
import { type Capabilities, createServices } from './services/compose.js';
import { type ReplicaDirectory, SingleServerDirectory } from './services/replicas.js';
import { SecretBox } from './services/secrets.js';
import type { ClusterSessions } from './sessions/cluster-sessions.js';
import { ConsoleChanges } from './sessions/console-changes.js';
import { SessionHub } from './sessions/hub.js';
import { SessionRegistry } from './sessions/session-registry.js';
import { ObservedStore } from './store/observed-store.js';
import { databaseLocation } from './store/postgres/location.js';

// serve-command.ts loads this module lazily and tells a bad TLS pair from other start-up failures.
export { TlsConfigError } from './tls-files.js';

export interface RunningServer {
  url: string;
  port: number;
  /** The metrics listener's /metrics URL with --metrics-listen, else null (/metrics is on `url`). */
  metricsUrl: string | null;
  dataDir: string;
  adminKeyFile: string;
  /** Whether `adminKeyFile` holds a current admin key: null when there is no such file. */
  adminKeyAccepted: boolean | null;
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
  capabilities: Omit<Capabilities, 'metrics' | 'presence' | 'replicas'> & {
    /** The other replicas' sessions; one process alone when absent. */
    cluster?: ClusterSessions;
    /** The deployment's server processes; this one alone when absent. */
    replicas?: ReplicaDirectory;
  },
  config: Parameters<typeof createServices>[1] &
    Partial<
      Pick<
        ServerConfig,
        | 'maxSessionsPerAddress'
        | 'handshakeTimeoutMs'
        | 'sessionsPerTurn'
        | 'rotationSpreadMs'
        | 'terminationAckTimeoutMs'
      >
    >,
): {
  services: Services;
  registry: SessionRegistry;
  hub: SessionHub;
  metrics: Metrics;
  /** The store the services were given, which says what each change touched. */
  store: ObservedStore;
  /** The admin console's live feed (`console.changes`), fed by the store and the registry. */
  consoleChanges: ConsoleChanges;
  /** Told where the server listens, once it does. */
  replicas: ReplicaDirectory;
} {
  const { clock, logger, cluster, replicas: givenReplicas, ...rest } = capabilities;
  const store = new ObservedStore(capabilities.store);
  const metrics = createMetrics();
  const registry = new SessionRegistry({
    clock,
    metrics,
    maxSessionsPerAddress: config.maxSessionsPerAddress,
    cluster,
    terminationAckTimeoutMs: config.terminationAckTimeoutMs,
  });
  const replicas = givenReplicas ?? new SingleServerDirectory({ clock, sessions: () => registry.size });
  const services = createServices(
    { ...rest, store, clock, logger, metrics, presence: registry, replicas },
    config,
  );
  const hub = new SessionHub({
    registry,
    agentSessions: services.agentSessions,
    handshakes: services.handshakes,
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
  const consoleChanges = new ConsoleChanges({
    groupOf: (connectorId) => store.read((view) => view.get('connectors', connectorId)?.groupId ?? null),
  });
  store.onChange((changes) => consoleChanges.recordsChanged(changes));
  registry.onPresenceChange((connectorId) => consoleChanges.connectionChanged(connectorId));
  return { services, registry, hub, metrics, store, consoleChanges, replicas };
}

/** Starts the enrollment server: store, services, HTTP + websocket on one port. */
export async function startServer(
  config: ServerConfig,
  options: { clock?: Clock; logger?: Logger } = {},
): Promise<RunningServer> {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? createServerLogger(config.logLevel, config.logFormat);
  const state = await openServerState(config, { clock, logger });
  const { secret, audit, identity, replication } = state.files;
  const { services, registry, hub, metrics, store, consoleChanges, replicas } = composeServer(
    {
      store: state.files.store,
      audit,
      clock,
      secretBox: new SecretBox(secret),
      identity,
      logger,
      cluster: replication?.cluster,
      replicas: replication?.directory,
    },
    config,
  );
  replication?.follow({ ...services, terminations: registry, metrics, records: store });
  const problems = () => replication?.problems() ?? [];

  const adminKeyFile = join(config.dataDir, 'admin.key');
  const bootstrapped = await services.apiKeys.bootstrap(adminKeyFile, {
    evenIfKeysExist: config.newAdminKey,
  });
  if (bootstrapped && config.newAdminKey)
    logger.warn(
      { file: adminKeyFile, keyId: bootstrapped.keyId },
      'a new admin key was written, as --new-admin-key asked; the other admin keys still work: delete those no longer in safe hands (api-keys list, api-keys delete)',
    );
  if (bootstrapped?.keptAside)
    logger.warn(
      { file: adminKeyFile, keptAside: bootstrapped.keptAside },
      'admin.key held a key this deployment does not accept (deleted, expired, or of another store or database): kept it aside, not overwritten',
    );
  if (bootstrapped) logger.info({ file: adminKeyFile }, 'bootstrap admin API key written');
  // A key file the deployment does not accept (a replica's copy of a key deleted since, another
  // deployment's): the CLI run here would be refused with it, and the start line points at it.
  const adminKeyAccepted = bootstrapped
    ? true
    : await readFile(adminKeyFile, 'utf8').then(
        (text) => services.apiKeys.accepts(text.trim()),
        () => null,
      );
  if (adminKeyAccepted === false)
    logger.warn(
      { file: adminKeyFile },
      'admin.key holds no current admin key of this deployment (deleted, expired, or another deployment’s): the CLI run with this data dir will be refused ADMIN_KEY_INVALID; copy a current admin key over it, or use --admin-key-file',
    );

  // One answer, for every path, to who a request comes from: the TCP peer or what a trusted proxy says.
  const clientAddressOf = clientAddressResolver(config.trustedProxies);
  const { onRequest, metricsServer } = serverRoutes({
    clientAddressOf,
    services,
    hub,
    identity,
    store,
    secret,
    clock,
    metrics,
    logger,
    adminKeyFile,
    config,
    problems,
    // An admin's keep-alive connection is then not pushed out by strangers or a storm's agents
    // between its calls (each call counts it again until its key is accepted).
    adminConnection: (socket) => guard.adminCall(socket),
    socketGauges: () => ({
      handshakesInProgress: websockets.handshakesInProgress(),
      connectionsOpen: guard.open,
      connectionsUnauthenticated: guard.unauthenticated,
    }),
  });
  const server = createMainServer({ tls: state.tls, headersTimeoutMs: config.headersTimeoutMs }, onRequest);
  const guard = new ConnectionGuard(
    connectionLimitsFor(config.fileLimit === undefined ? await openFileLimit() : config.fileLimit, {
      maxUnauthenticatedPerAddress: config.maxUnauthenticatedPerAddress,
      maxUnauthenticated: config.maxUnauthenticatedConnections,
    }),
    {
      metrics,
      logger,
      plainHttp: !state.tls,
      retryAfterSeconds: () => 1 + Math.floor(Math.random() * Math.ceil(config.headersTimeoutMs / 1000)),
    },
  );
  // Before HTTP sees the socket, so that a refused one costs no parser.
  server.prependListener('connection', guard.onConnection);
  // A connection the server is working for (its request arrived whole, until the answer ends) is
  // never the idle one evicted past the total cap; one still sending its body is waited on, idle.
  server.prependListener('request', (req, res) => {
    guard.requestArrived(req.socket);
    let counted = false;
    let answered = false;
    const start = () => {
      if (counted || answered) return;
      counted = true;
      guard.requestStarted(req.socket);
    };
    if (req.complete || !hasBody(req)) start();
    else req.once('end', start);
    res.once('close', () => {
      answered = true;
      if (counted) guard.requestEnded(req.socket);
    });
  });
  server.prependListener('upgrade', (req) => {
    guard.requestArrived(req.socket);
    guard.requestStarted(req.socket);
  });
  const websockets = attachAgentWebsockets(server, {
    clock,
    clientAddressOf,
    services,
    hub,
    guard,
    metrics,
    logger,
    config,
    secure: state.tls !== null,
    records: store,
    consoleChanges,
    notReady: () => problems()[0] ?? null,
  });

  const sweepPending = () => services.connectors.sweepPending();
  const sweepTimer = setInterval(
    () => sweepPending().catch((error) => logger.error({ err: error }, 'pending sweep failed')),
    Math.min(60_000, Math.max(1000, config.pendingTtlMs / 10)),
  );
  sweepTimer.unref();

  // The metrics listener first: if its address is taken, nothing has started listening.
  let metricsUrl: string | null = null;
  let port: number;
  try {
    if (metricsServer && config.metricsListen) {
      const metricsPort = await listen(metricsServer, config.metricsListen);
      metricsUrl = `${urlOf('http', config.metricsListen.host, metricsPort)}/metrics`;
    }
    port = await listen(server, config, LISTEN_BACKLOG);
  } catch (error) {
    // A port in use must not leave the data dir held by a server that never ran.
    metricsServer?.close();
    clearInterval(sweepTimer);
    await state.close().catch(() => {});
    throw error;
  }
  const url = config.publicUrl ?? urlOf(state.tls ? 'https' : 'http', config.host, port);
  // Not fatal: the replicas table shows the URL until then as the one it started with (or none).
  await replicas
    .listening(url)
    .catch((error) => logger.warn({ err: error }, 'could not record this replica’s URL'));
  // Once listening, the only errors a server emits are failed accepts (EMFILE past the file limit).
  server.on('error', guard.onAcceptError);
  if (metricsUrl) logger.info({ url: metricsUrl }, 'metrics listening');
  const storeIn = config.databaseUrl ? `postgres ${databaseLocation(config.databaseUrl)}` : 'embedded';
  logger.info({ url, store: storeIn, dataDir: config.dataDir, adminKeyFile }, 'enrollment server listening');
  // Said at start, not only to whoever opens the console (a 503 page): `npm ci` alone, or an
  // upgrade that skipped the build, serves the API without it.
  const consoleDir = config.consoleDir ?? CONSOLE_DIR;
  if (!existsSync(join(consoleDir, 'index.html')))
    logger.warn(
      { dir: consoleDir },
      'the admin console is not built: / answers 503 until `npm run build:console` is run (the API works)',
    );

  let closing: Promise<void> | null = null;
  const close = async () => {
    clearInterval(sweepTimer);
    hub.closeAll();
    websockets.close();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      metricsServer?.close();
      metricsServer?.closeAllConnections();
      // Sessions were asked to close (1001); a peer that does not finish the close handshake,
      // or a websocket that never subscribed, would otherwise hold the shutdown open.
      setTimeout(websockets.destroyUpgraded, SHUTDOWN_GRACE_MS).unref();
    });
    // Before the audit log closes: repeated connects not yet summed up are written.
    services.agentSessions.close();
    await state.close();
    logger.info('enrollment server stopped');
  };
  return {
    url,
    port,
    metricsUrl,
    dataDir: config.dataDir,
    adminKeyFile,
    adminKeyAccepted,
    services,
    hub,
    logger,
    sweepPending,
    close: () => {
      closing ??= close();
      return closing;
    },
  };
}

/** Whether a request announces a body (a length above 0, or a chunked one). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
