import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createSecureContext } from 'node:tls';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { type WebSocket, WebSocketServer } from 'ws';
import { DomainError } from '../shared/errors.js';
import { ensurePrivateDir } from '../shared/private-files.js';
import { CLOSE_CODES, SESSION_NONCE_HEADER } from '../shared/protocol.js';
import { BACKUP_PATH, backupHandler } from './backup/http-endpoint.js';
import { type Clock, systemClock } from './clock.js';
import { bearerTokenOf, type Context, remoteAddressOf, type Services } from './context.js';
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
import { createServerLogger } from './logging.js';
import { appRouter } from './router.js';
import { ISSUER, JWKS_MAX_AGE_SECONDS, type ServerConfig } from './server-config.js';
import { FileAuditLog } from './services/audit.js';
import { createServices } from './services/compose.js';
import { IdentityAuthority, originOf } from './services/identity.js';
import { SecretBox } from './services/secrets.js';
import { provedNothing, type SessionHub } from './sessions/hub.js';
import { RetryAfterSpreader } from './sessions/retry-spreader.js';
import { authenticationTurns } from './sessions/turns.js';
import { lockDataDir } from './store/data-dir-lock.js';
import { DataFileError, LowdbStore, writeFileDurably } from './store/lowdb-store.js';

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
/** Shedding is logged at most once per interval, with the count since the last line. */
const SHED_LOG_INTERVAL_MS = 10_000;

/** Authentications started per event-loop turn (~1 ms of CPU each). */
const AUTHENTICATIONS_PER_TURN = 16;

/**
 * Holds what is written to `socket` until the end of this event-loop turn, so that the frames that
 * follow an authenticated handshake (the subscription's `started`, then `ready`) leave in one write:
 * each write to a socket is a syscall and a TCP segment, and in a CPU profile of 4,000 connects the
 * frame writes were the largest single cost (15 % of the server's busy time).
 */
/** A fresh nonce for one websocket connection (128 bits from the CSPRNG). */
function sessionNonce(): string {
  return randomBytes(16).toString('base64url');
}

function coalesceWrites(socket: Duplex): void {
  socket.cork();
  setImmediate(() => socket.uncork());
}

/** A websocket handshake holding one admission slot, from its upgrade request to its authentication. */
interface Handshake {
  /** Closes the socket with 4408 if its connectionParams do not arrive in time. */
  timer: NodeJS.Timeout | undefined;
  /** Sent in the 101 response; the agent's proof must sign it. */
  nonce: string;
  /** Frees the slot and drops the timer and the close listener; idempotent. */
  end(): void;
}

/** Reads the 32-byte server secret that encrypts stored provisioning keys, creating it on first start. */
async function loadOrCreateSecret(file: string): Promise<Buffer> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT')
      throw new DataFileError(file, `cannot be read (${code ?? (error as Error).message})`);
    const secret = randomBytes(32);
    await writeFileDurably(file, `${secret.toString('base64')}\n`);
    return secret;
  }
  const secret = Buffer.from(text.trim(), 'base64');
  if (secret.length !== 32 || secret.toString('base64') !== text.trim()) {
    throw new DataFileError(
      file,
      'is damaged (it must hold one base64 32-byte secret); restore it from a backup: without it the stored provisioning keys cannot be read',
    );
  }
  return secret;
}

/** The --tls-cert / --tls-key pair cannot be used; the message names the file and the problem. */
export class TlsConfigError extends Error {}

/** Reads and checks the certificate and key before anything else starts, so a bad pair touches nothing. */
async function loadTlsPair(certFile: string, keyFile: string): Promise<{ cert: Buffer; key: Buffer }> {
  const read = (file: string, flag: string) =>
    readFile(file).catch((error: NodeJS.ErrnoException) => {
      throw new TlsConfigError(`${flag} ${file}: cannot read it (${error.code ?? error.message})`);
    });
  const [cert, key] = await Promise.all([read(certFile, '--tls-cert'), read(keyFile, '--tls-key')]);
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    throw new TlsConfigError(
      `--tls-cert ${certFile} / --tls-key ${keyFile}: not a usable PEM certificate and matching key (${(error as Error).message})`,
    );
  }
  return { cert, key };
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
    metrics.handshakesInProgress.set(handshakesInProgress);
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

  // Admission control. In a reconnect storm, upgrades that wait behind thousands of others are
  // abandoned by agents after their 30 s handshake timeout (the work queued for them wasted) and
  // delay admin calls. Past the cap an upgrade is answered 503 at once, before any websocket or
  // tRPC work, and the agent comes back after Retry-After (spread over the time the server needs
  // for the crowd it has seen) plus a second of jitter.
  let handshakesInProgress = 0;
  /** Every socket upgraded to a websocket and not yet closed: shutdown must not wait on them for ever. */
  const upgraded = new Set<Duplex>();
  // Its own scope on purpose: a listener made inside the upgrade handler would keep that handler's
  // whole closure context (the request with its headers) alive as long as the session (~1 KB each).
  const trackUpgraded = (socket: Duplex) => {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
  };
  const spreader = new RetryAfterSpreader({ initialRatePerSecond: config.maxHandshakesInProgress });
  const handshakes = new WeakMap<IncomingMessage, Handshake>();
  let shedSinceLog = 0;
  let lastShedLogAt = Number.NEGATIVE_INFINITY;
  const shed = (socket: Duplex) => {
    metrics.handshakesShed.inc();
    shedSinceLog++;
    const now = performance.now();
    if (now - lastShedLogAt >= SHED_LOG_INTERVAL_MS) {
      logger.warn(
        { shedSinceLastLog: shedSinceLog, maxHandshakesInProgress: config.maxHandshakesInProgress },
        'too many websocket handshakes in progress; answering new ones 503 with Retry-After',
      );
      shedSinceLog = 0;
      lastShedLogAt = now;
    }
    const retryAfterSeconds = spreader.retryAfterSeconds(handshakesInProgress);
    const body = 'too many websocket handshakes in progress; retry later\n';
    socket.on('error', () => socket.destroy());
    socket.once('finish', () => socket.destroy());
    socket.end(
      `HTTP/1.1 503 Service Unavailable\r\nRetry-After: ${retryAfterSeconds}\r\nConnection: close\r\n` +
        `Content-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
  };

  // Each connection's own nonce goes out in its 101 response: a proof signs it, so a captured proof
  // is worth nothing on any other connection, before or after a restart.
  wss.on('headers', (headers: string[], req: IncomingMessage) => {
    const handshake = handshakes.get(req);
    if (handshake) headers.push(`${SESSION_NONCE_HEADER}: ${handshake.nonce}`);
  });
  const publicOrigin = config.publicUrl ? originOf(config.publicUrl) : null;

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if ((req.url ?? '').split('?')[0] !== '/trpc') {
      socket.destroy();
      return;
    }
    if (handshakesInProgress >= config.maxHandshakesInProgress) {
      shed(socket);
      return;
    }
    handshakesInProgress++;
    const handshake: Handshake = {
      timer: undefined,
      nonce: sessionNonce(),
      end: () => {
        if (!handshakes.delete(req)) return;
        handshakesInProgress--;
        spreader.noteFinished();
        clearTimeout(handshake.timer);
        socket.off('close', handshake.end);
      },
    };
    handshakes.set(req, handshake);
    // Covers every way out before authentication: a refused upgrade, a client that goes away.
    socket.once('close', handshake.end);
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (!handshakes.has(req)) return;
      trackUpgraded(socket);
      handshake.timer = setTimeout(() => {
        ws.close(CLOSE_CODES.HANDSHAKE_TIMEOUT, 'connectionParams not sent in time');
        handshake.end();
      }, config.handshakeTimeoutMs);
      handshake.timer.unref();
      wss.emit('connection', ws, req);
    });
  });

  const authenticationTurn = authenticationTurns(AUTHENTICATIONS_PER_TURN);
  const authenticate = async (
    req: IncomingMessage,
    ws: WebSocket,
    connectionParams: unknown,
    nonce: string,
  ): Promise<Context> => {
    const remoteAddress = remoteAddressOf(req);
    const base = { services, remoteAddress, bearerToken: null };
    // Failed handshakes block the address they come from, but only for handshakes that prove
    // nothing: an agent whose identity and proof check out is let in, so one stranger behind a NAT
    // cannot keep the site's fleet out. A blocked address's handshakes are signature-checked only
    // if they name a known connector (a revoked one too: its host must be told).
    const blockedForSeconds = await services.limiter.handshakeRetryAfter(remoteAddress);
    try {
      const agent = await hub.authenticate(connectionParams, {
        remoteAddress,
        ws,
        socket: req.socket,
        binding: { nonce, origin: publicOrigin },
        knownConnectorsOnly: blockedForSeconds > 0,
      });
      return { ...base, agent, agentRefusal: null };
    } catch (error) {
      const reason = error instanceof DomainError ? error.reason : 'IDENTITY_INVALID';
      if (!(error instanceof DomainError))
        logger.error({ err: error }, 'session authentication failed unexpectedly');
      // A full address is not a failed attempt: the agent behind it did nothing wrong.
      if (reason !== 'RATE_LIMITED') await services.limiter.handshakeFailed(remoteAddress);
      if (blockedForSeconds > 0 && provedNothing(reason)) {
        hub.refuse(ws, 'RATE_LIMITED', remoteAddress, blockedForSeconds);
        return { ...base, agent: null, agentRefusal: 'RATE_LIMITED' };
      }
      hub.refuse(ws, reason, remoteAddress);
      return { ...base, agent: null, agentRefusal: reason };
    }
  };
  applyWSSHandler({
    wss,
    router: appRouter,
    maxBatchSize: 10,
    // Agents ping every 45 s, which resets this timer: the server pings only a quiet peer, and cuts
    // it off when it stays silent.
    keepAlive: { enabled: true, pingMs: 60_000, pongWaitMs: 15_000 },
    createContext: async ({ req, res: ws, info }): Promise<Context> => {
      // The connectionParams came: the deadline is met. The slot is held until the verdict, and
      // then nothing of the handshake stays with the live session.
      const handshake = handshakes.get(req);
      clearTimeout(handshake?.timer);
      try {
        await authenticationTurn();
        const context = await authenticate(
          req,
          ws,
          info.connectionParams,
          handshake?.nonce ?? sessionNonce(),
        );
        if (context.agent) {
          guard.authenticated(req.socket);
          coalesceWrites(req.socket);
        }
        return context;
      } finally {
        handshake?.end();
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
          setTimeout(() => {
            for (const socket of upgraded) socket.destroy();
          }, SHUTDOWN_GRACE_MS).unref();
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
