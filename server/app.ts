import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import pino, { type Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { DomainError } from '../shared/errors.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { type Clock, systemClock } from './clock.js';
import { bearerTokenOf, type Context, remoteAddressOf, type Services } from './context.js';
import { appRouter } from './router.js';
import { FileAuditLog } from './services/audit.js';
import { createServices } from './services/compose.js';
import type { Policy } from './services/deps.js';
import { IdentityAuthority } from './services/identity.js';
import { DEFAULT_RATE_LIMITS, type RateLimits } from './services/rate-limit.js';
import { SecretBox } from './services/secrets.js';
import type { SessionHub } from './sessions/hub.js';
import { LowdbStore, writeFileDurably } from './store/lowdb-store.js';

export interface ServerConfig extends Policy {
  dataDir: string;
  host: string;
  port: number;
  publicUrl: string | null;
  tlsCertFile: string | null;
  tlsKeyFile: string | null;
  logLevel: string;
  rateLimits: RateLimits;
  /** Largest HTTP request body accepted. @default 65536 */
  maxBodyBytes: number;
  /** Largest websocket message accepted. @default 65536 */
  maxWsMessageBytes: number;
  /** How long a new websocket may take to send its connectionParams. @default 10000 */
  handshakeTimeoutMs: number;
  /**
   * Live agent sessions allowed from one source address; generous because a NAT'd fleet shares
   * one address. @default 20000
   */
  maxSessionsPerAddress: number;
}

export const DAY_MS = 86_400_000;

export function defaultConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  return {
    dataDir: './data',
    host: '127.0.0.1',
    port: 7420,
    publicUrl: null,
    tlsCertFile: null,
    tlsKeyFile: null,
    logLevel: 'info',
    keyTtlMs: 14 * DAY_MS,
    identityTtlMs: 365 * DAY_MS,
    pendingTtlMs: 7 * DAY_MS,
    rateLimits: DEFAULT_RATE_LIMITS,
    maxBodyBytes: 65_536,
    maxWsMessageBytes: 65_536,
    handshakeTimeoutMs: 10_000,
    maxSessionsPerAddress: 20_000,
    ...overrides,
  };
}

export interface RunningServer {
  url: string;
  port: number;
  dataDir: string;
  adminKeyFile: string;
  services: Services;
  hub: SessionHub;
  logger: Logger;
  /** Removes never-connected connectors past the pending TTL now (also runs on a timer). */
  sweepPending(): Promise<string[]>;
  close(): Promise<void>;
}

export const ISSUER = 'connector-enrollment';

/** Reads the 32-byte server secret that encrypts stored provisioning keys, creating it on first start. */
async function loadOrCreateSecret(file: string): Promise<Buffer> {
  try {
    const secret = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64');
    if (secret.length !== 32) throw new Error(`${file}: expected a base64 32-byte secret`);
    return secret;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const secret = randomBytes(32);
    await writeFileDurably(file, `${secret.toString('base64')}\n`);
    return secret;
  }
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
  const logger =
    options.logger ??
    pino({
      level: config.logLevel,
      base: { service: 'connector-server' },
      redact: ['req.headers.authorization'],
    });

  const tls =
    config.tlsCertFile && config.tlsKeyFile ? await loadTlsPair(config.tlsCertFile, config.tlsKeyFile) : null;
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  if (((await stat(config.dataDir)).mode & 0o077) !== 0) await chmod(config.dataDir, 0o700);
  const file = (name: string) => join(config.dataDir, name);

  const secretBox = new SecretBox(await loadOrCreateSecret(file('secret.key')));
  const store = await LowdbStore.open(file('store.json'), {
    onWriteError: (error) => logger.error({ err: error }, 'store write failed; state reloaded from disk'),
  });
  const audit = await FileAuditLog.open(file('audit.jsonl'), clock, {
    onWriteError: (error) => logger.error({ err: error }, 'audit log write failed'),
  });
  const identity = await IdentityAuthority.open(file('signing-keys.json'), { issuer: ISSUER, clock });
  const { services, metrics } = createServices({ store, audit, clock, secretBox, identity, logger }, config);
  const { hub, connectors } = services;

  const adminKeyFile = file('admin.key');
  if (await services.apiKeys.bootstrap(adminKeyFile))
    logger.info({ file: adminKeyFile }, 'bootstrap admin API key written');

  const trpcHandler = createHTTPHandler({
    router: appRouter,
    basePath: '/trpc/',
    maxBodySize: config.maxBodyBytes,
    // One call per request keeps limits, audit and errors per call; no client here batches.
    allowBatching: false,
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

  const onRequest = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    };
    if (path === '/healthz')
      return send(200, 'application/json', JSON.stringify({ ok: true, sessions: hub.size }));
    if (path === '/.well-known/jwks.json')
      return send(200, 'application/json', JSON.stringify(identity.publicKeySet()));
    if (path === '/metrics') {
      const counts = connectors.counts();
      for (const state of ['enabled', 'disabled', 'revoked', 'connected', 'disconnected'] as const) {
        metrics.connectors.set({ state }, counts[state]);
      }
      metrics.connectors.set({ state: 'never' }, counts.neverConnected);
      return send(200, metrics.registry.contentType, await metrics.registry.metrics());
    }
    if (path?.startsWith('/trpc/')) return trpcHandler(req, res);
    send(404, 'application/json', JSON.stringify({ error: 'not found' }));
  };

  let server: Server;
  if (tls) {
    server = createHttpsServer(tls, onRequest) as unknown as Server;
  } else {
    server = createHttpServer(onRequest);
  }
  server.headersTimeout = 15_000;
  server.requestTimeout = 30_000;
  server.maxHeadersCount = 64;

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxWsMessageBytes,
    clientTracking: false,
  });
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?')[0] !== '/trpc') {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  const handshakeTimers = new WeakMap<object, NodeJS.Timeout>();
  wss.on('connection', (ws) => {
    const timer = setTimeout(
      () => ws.close(CLOSE_CODES.HANDSHAKE_TIMEOUT, 'connectionParams not sent in time'),
      config.handshakeTimeoutMs,
    );
    timer.unref();
    handshakeTimers.set(ws, timer);
    ws.once('close', () => clearTimeout(timer));
  });
  applyWSSHandler({
    wss,
    router: appRouter,
    maxBatchSize: 10,
    // Agents ping every 45 s, which resets this timer: the server pings only a quiet peer, and cuts
    // it off when it stays silent.
    keepAlive: { enabled: true, pingMs: 60_000, pongWaitMs: 15_000 },
    createContext: async ({ req, res: ws, info }): Promise<Context> => {
      clearTimeout(handshakeTimers.get(ws));
      const remoteAddress = remoteAddressOf(req);
      const base = { services, remoteAddress, bearerToken: null };
      const retryAfter = await services.limiter.handshakeRetryAfter(remoteAddress);
      if (retryAfter > 0) {
        ws.close(CLOSE_CODES.RATE_LIMITED, `RATE_LIMITED retry-after=${retryAfter}`);
        return { ...base, agent: null, agentRefusal: 'RATE_LIMITED' };
      }
      try {
        const agent = await hub.authenticate(info.connectionParams, remoteAddress, ws);
        return { ...base, agent, agentRefusal: null };
      } catch (error) {
        const reason = error instanceof DomainError ? error.reason : 'IDENTITY_INVALID';
        if (!(error instanceof DomainError))
          logger.error({ err: error }, 'session authentication failed unexpectedly');
        // A full address is not a failed attempt: the agent behind it did nothing wrong.
        if (reason !== 'RATE_LIMITED') await services.limiter.handshakeFailed(remoteAddress);
        hub.refuse(ws, reason, remoteAddress);
        return { ...base, agent: null, agentRefusal: reason };
      }
    },
  });

  const sweepPending = () => connectors.sweepPending();
  const sweepTimer = setInterval(
    () => sweepPending().catch((error) => logger.error({ err: error }, 'pending sweep failed')),
    Math.min(60_000, Math.max(1000, config.pendingTtlMs / 10)),
  );
  sweepTimer.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const scheme = tls ? 'https' : 'http';
  const hostForUrl = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = config.publicUrl ?? `${scheme}://${hostForUrl}:${port}`;
  logger.info({ url, dataDir: config.dataDir, adminKeyFile }, 'enrollment server listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
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
        });
        await store.close();
        await audit.close();
        logger.info('enrollment server stopped');
      })();
      return closing;
    },
  };
}
