import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import type { Clock } from '../clock.js';
import type { Context, Services } from '../context.js';
import type { Metrics } from '../metrics.js';
import { appRouter } from '../router.js';
import { AGENT_PING_MS, AGENT_PONG_WAIT_MS, type ServerConfig } from '../server-config.js';
import { originOf } from '../services/proof.js';
import type { ConsoleChanges } from '../sessions/console-changes.js';
import type { SessionHub } from '../sessions/hub.js';
import { AgentMessageRate } from '../sessions/message-rate.js';
import type { ObservedStore } from '../store/observed-store.js';
import { agentAuthenticator } from './agent-auth.js';
import type { ClientAddressOf } from './client-address.js';
import type { ConnectionGuard } from './connection-guard.js';
import { adminKeyOf, ConsoleSockets } from './console-sockets.js';
import { coalesceWrites, websocketAdmission } from './websocket-admission.js';

export interface AgentWebsocketsDeps {
  services: Services;
  hub: SessionHub;
  guard: ConnectionGuard;
  metrics: Metrics;
  logger: Logger;
  /** The clock proofs are checked by, whose time each upgrade's answer carries. */
  clock: Clock;
  clientAddressOf: ClientAddressOf;
  config: Pick<
    ServerConfig,
    | 'maxWsMessageBytes'
    | 'maxHandshakesInProgress'
    | 'handshakeTimeoutMs'
    | 'handshakeGraceMs'
    | 'publicUrl'
    | 'agentPingMs'
  >;
  /** Whether the main listener serves TLS: the scheme of the server's own origin without --public-url. */
  secure: boolean;
  /** What each change touched: an admin key deleted closes the console sockets it opened. */
  records: Pick<ObservedStore, 'onChange'>;
  /** The feed admins' sockets subscribe to (`console.changes`). */
  consoleChanges: ConsoleChanges;
  /** Why no new session should be taken now (see websocketAdmission); null: ready. */
  notReady?: () => string | null;
}

/**
 * The websocket endpoint on `server`, for agents and for the admin console: upgrades pass the
 * admission gate (a browser's only from the server's own origin), each socket's first message (an
 * agent's identity and proof, or an admin's key) is checked before tRPC gives it a context, and an
 * authenticated socket leaves the unauthenticated count and has its writes coalesced (an agent's
 * has its messages counted: AgentMessageRate).
 */
export function attachAgentWebsockets(server: Server, deps: AgentWebsocketsDeps) {
  const { services, hub, guard, metrics, logger, clientAddressOf, config, notReady } = deps;
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: config.maxWsMessageBytes,
    clientTracking: false,
  });
  const admission = websocketAdmission(wss, {
    maxHandshakesInProgress: config.maxHandshakesInProgress,
    handshakeTimeoutMs: config.handshakeTimeoutMs,
    ...(config.handshakeGraceMs !== undefined ? { graceMs: config.handshakeGraceMs } : {}),
    // The upgrade's request is answered: idle until its first message, spared for the grace.
    onUpgraded: (socket, graceMs) => guard.upgraded(socket as Socket, graceMs),
    metrics,
    logger,
    now: () => deps.clock.now(),
    notReady,
    ownOrigin: ownOriginOf(config.publicUrl, deps.secure),
  });
  server.on('upgrade', admission.onUpgrade);
  const consoleSockets = new ConsoleSockets({
    services,
    hub,
    changes: deps.consoleChanges,
    metrics,
    logger,
    clientAddressOf,
  });
  const stopWatchingKeys = deps.records.onChange((changes) => consoleSockets.recordsChanged(changes));
  const agentMessages = new AgentMessageRate(logger, metrics);
  const authenticateAgent = agentAuthenticator({
    services,
    hub,
    logger,
    publicOrigin: config.publicUrl ? publicOriginOf(config.publicUrl) : null,
    clientAddressOf,
  });
  applyWSSHandler({
    wss,
    router: appRouter,
    maxBatchSize: 10,
    // Agents ping every 45 s, which resets this timer: the server pings only a quiet peer, and cuts
    // it off when it stays silent.
    keepAlive: { enabled: true, pingMs: config.agentPingMs ?? AGENT_PING_MS, pongWaitMs: AGENT_PONG_WAIT_MS },
    createContext: async ({ req, res: ws, info }): Promise<Context> => {
      const handshake = admission.paramsArrived(req);
      // Too late: the socket was closed 4408 when its handshake was replaced or timed out. Checked
      // against no nonce, an honest agent's proof was a PROOF_INVALID (a security event).
      if (!handshake)
        return {
          services,
          hub,
          remoteAddress: clientAddressOf(req),
          bearerToken: null,
          agent: null,
          agentRefusal: 'IDENTITY_INVALID',
        };
      // The server works for this socket until the verdict: not the idle one a newcomer replaces.
      guard.requestStarted(req.socket);
      let authenticated = false;
      try {
        const adminKey = adminKeyOf(info.connectionParams);
        if (adminKey === undefined) agentMessages.watch(ws);
        const context =
          adminKey !== undefined
            ? await consoleSockets.authenticate(req, ws, adminKey)
            : await authenticateAgent(req, ws, info.connectionParams, handshake.nonce);
        if (context.agent) agentMessages.authenticated(ws, context.agent.connectorId);
        if (context.agent || context.consoleChanges) {
          authenticated = true;
          guard.authenticated(req.socket);
          coalesceWrites(req.socket);
        }
        return context;
      } finally {
        handshake.end();
        // Refused: it only has to answer the close frame now (cut within 2 s if it does not).
        if (!authenticated) guard.requestEnded(req.socket);
      }
    },
  });
  return {
    handshakesInProgress: () => admission.inProgress(),
    /** Open admin (console) sockets. */
    consoleSockets: () => consoleSockets.size,
    /** Stops accepting upgrades and closes the admins' sockets; agents' are the hub's to close. */
    close: () => {
      stopWatchingKeys();
      consoleSockets.closeAll();
      wss.close();
    },
    /** Cuts every upgraded socket that has not closed (the shutdown's last step). */
    destroyUpgraded: admission.destroyUpgraded,
  };
}

/**
 * The origin proofs are bound to. A public URL without one would leave them bound to none: refused
 * here too, for a config made without parseServeConfig.
 */
function publicOriginOf(publicUrl: string): string {
  const origin = originOf(publicUrl);
  if (origin === null) throw new TypeError(`publicUrl ${publicUrl} has no http(s) origin`);
  return origin;
}

/**
 * The origin a browser's upgrade must come from, given the request: the --public-url's when set
 * (behind a proxy the Host and scheme the server sees are not the browser's), else the Host it was
 * sent to with this listener's scheme.
 */
function ownOriginOf(publicUrl: string | null | undefined, secure: boolean) {
  const fixed = publicUrl ? originOf(publicUrl) : null;
  return (host: string | undefined): string | null => {
    if (fixed) return fixed;
    if (!host) return null;
    try {
      return new URL(`${secure ? 'https' : 'http'}://${host}`).origin;
    } catch {
      return null;
    }
  };
}
