import type { Server } from 'node:http';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import type { Context, Services } from '../context.js';
import type { Metrics } from '../metrics.js';
import { appRouter } from '../router.js';
import { AGENT_PING_MS, AGENT_PONG_WAIT_MS, type ServerConfig } from '../server-config.js';
import { originOf } from '../services/identity.js';
import type { SessionHub } from '../sessions/hub.js';
import { agentAuthenticator } from './agent-auth.js';
import type { ClientAddressOf } from './client-address.js';
import type { ConnectionGuard } from './connection-guard.js';
import { coalesceWrites, websocketAdmission } from './websocket-admission.js';

export interface AgentWebsocketsDeps {
  services: Services;
  hub: SessionHub;
  guard: ConnectionGuard;
  metrics: Metrics;
  logger: Logger;
  clientAddressOf: ClientAddressOf;
  config: Pick<
    ServerConfig,
    'maxWsMessageBytes' | 'maxHandshakesInProgress' | 'handshakeTimeoutMs' | 'publicUrl' | 'agentPingMs'
  >;
  /** Why no new session should be taken now (see websocketAdmission); null: ready. */
  notReady?: () => string | null;
}

/**
 * The agents' websocket endpoint on `server`: upgrades pass the admission gate, each socket's first
 * message (its identity and proof) is checked before tRPC gives it a context, and an authenticated
 * socket leaves the unauthenticated count and has its writes coalesced.
 */
export function attachAgentWebsockets(
  server: Server,
  { services, hub, guard, metrics, logger, clientAddressOf, config, notReady }: AgentWebsocketsDeps,
) {
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
    notReady,
  });
  server.on('upgrade', admission.onUpgrade);
  const authenticateAgent = agentAuthenticator({
    services,
    hub,
    logger,
    publicOrigin: config.publicUrl ? originOf(config.publicUrl) : null,
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
  return {
    handshakesInProgress: () => admission.inProgress(),
    /** Stops accepting upgrades; sockets still open are the hub's to close. */
    close: () => wss.close(),
    /** Cuts every upgraded socket that has not closed (the shutdown's last step). */
    destroyUpgraded: admission.destroyUpgraded,
  };
}
