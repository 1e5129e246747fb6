import { Registry } from 'prom-client';
import type { Metrics } from '../metrics.js';
import { JWKS_MAX_AGE_SECONDS } from '../server-config.js';
import type { ConnectorService } from '../services/connectors.js';
import type { IdentityAuthority } from '../services/identity.js';
import type { ReplicaService } from '../services/replicas.js';
import type { Page } from './endpoints.js';
import { processMetrics } from './process-metrics.js';

/** The socket counts the HTTP layer keeps, read at each scrape. */
export interface SocketGauges {
  handshakesInProgress: number;
  connectionsOpen: number;
  connectionsUnauthenticated: number;
}

export interface OpsPagesDeps {
  sessions: { readonly size: number };
  identity: Pick<IdentityAuthority, 'publicKeySet'>;
  connectors: Pick<ConnectorService, 'counts'>;
  replicas: Pick<ReplicaService, 'liveCount'>;
  metrics: Metrics;
  socketGauges(): SocketGauges;
  /** Why this server is not ready (a replica without its database); empty when it is. */
  problems?: () => string[];
}

/** The plain pages for operators and verifiers: /healthz, the JWKS and /metrics. */
export function opsPages({
  sessions,
  identity,
  connectors,
  replicas,
  metrics,
  socketGauges,
  problems,
}: OpsPagesDeps) {
  // Process metrics (CPU, memory, event loop, GC, file descriptors) beside the server's own.
  const exposedMetrics = Registry.merge([metrics.registry, processMetrics()]);
  return {
    // A load balancer's check: 503 while a replica cannot take new sessions (it keeps the ones it has).
    healthz: (): Page => {
      const found = problems?.() ?? [];
      return found.length === 0
        ? {
            type: 'application/json',
            body: JSON.stringify({ ok: true, ready: true, sessions: sessions.size }),
          }
        : {
            type: 'application/json',
            status: 503,
            body: JSON.stringify({ ok: false, ready: false, sessions: sessions.size, problems: found }),
          };
    },
    jwks: (): Page => ({
      type: 'application/json',
      body: JSON.stringify(identity.publicKeySet()),
      cacheControl: `public, max-age=${JWKS_MAX_AGE_SECONDS}`,
    }),
    metrics: async (): Promise<Page> => {
      const counts = connectors.counts();
      for (const state of ['enabled', 'disabled', 'revoked', 'connected', 'disconnected'] as const) {
        metrics.connectors.set({ state }, counts[state]);
      }
      metrics.connectors.set({ state: 'never' }, counts.neverConnected);
      metrics.replicasLive.set(replicas.liveCount());
      const sockets = socketGauges();
      metrics.handshakesInProgress.set(sockets.handshakesInProgress);
      metrics.connectionsOpen.set(sockets.connectionsOpen);
      metrics.connectionsUnauthenticated.set(sockets.connectionsUnauthenticated);
      return { type: exposedMetrics.contentType, body: await exposedMetrics.metrics() };
    },
  };
}
