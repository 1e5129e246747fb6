import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The server's Prometheus metrics, in a registry of their own so that several servers can share a process (tests). */
export function createMetrics() {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    enrollments: new Counter({
      name: 'connector_enrollments_total',
      help: 'Enrollment attempts by outcome (success or the refusal reason).',
      labelNames: ['outcome'] as const,
      registers,
    }),
    connectors: new Gauge({
      name: 'connector_connectors',
      help: 'Stored connectors by state (enabled, disabled, revoked, connected, disconnected, never).',
      labelNames: ['state'] as const,
      registers,
    }),
    sessions: new Gauge({
      name: 'connector_sessions_live',
      help: 'Agent sessions connected now.',
      registers,
    }),
    sessionConnects: new Counter({
      name: 'connector_session_connects_total',
      help: 'Agent sessions accepted.',
      registers,
    }),
    sessionReplacements: new Counter({
      name: 'connector_sessions_replaced_total',
      help: 'Agent sessions replaced by a newer session with the same identity (a clone, or a reconnect over a stale socket).',
      registers,
    }),
    sessionRefusals: new Counter({
      name: 'connector_session_refusals_total',
      help: 'Agent sessions refused, by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
    hostReports: new Counter({
      name: 'connector_host_reports_total',
      help: 'Host-facts reports from agents (agent.report); an agent sends one only when its facts changed.',
      registers,
    }),
    handshakesInProgress: new Gauge({
      name: 'connector_handshakes_in_progress',
      help: 'Websocket handshakes between the upgrade request and the end of their authentication.',
      registers,
    }),
    handshakesShed: new Counter({
      name: 'connector_handshakes_shed_total',
      help: 'Websocket upgrades answered 503 with Retry-After because too many handshakes were in progress.',
      registers,
    }),
    adminAuthFailures: new Counter({
      name: 'connector_admin_auth_failures_total',
      help: 'Admin API calls without a valid admin key (missing, unknown, wrong or expired), whatever the answer.',
      registers,
    }),
    adminAuthRateLimited: new Counter({
      name: 'connector_admin_auth_rate_limited_total',
      help: 'Admin API calls without a valid admin key answered 429 because their address had too many such calls in the window.',
      registers,
    }),
    connectionsOpen: new Gauge({
      name: 'connector_connections_open',
      help: 'Connections open on the main listener, of every kind.',
      registers,
    }),
    connectionsUnauthenticated: new Gauge({
      name: 'connector_connections_unauthenticated',
      help: 'Connections open on the main listener that carry no authenticated agent session (HTTP calls, handshakes, idle strangers).',
      registers,
    }),
    connectionsRefused: new Counter({
      name: 'connector_connections_refused_total',
      help: 'New connections closed at once, by reason: address_limit (too many unauthenticated from its address), unauthenticated_limit (too many in total), file_limit (close to the open-file limit).',
      labelNames: ['reason'] as const,
      registers,
    }),
    acceptErrors: new Counter({
      name: 'connector_accept_errors_total',
      help: 'Connections the kernel could not hand over (EMFILE and the like: the open-file limit was reached).',
      labelNames: ['code'] as const,
      registers,
    }),
    revokeCloseSeconds: new Histogram({
      name: 'connector_revoke_close_seconds',
      help: 'Time from a revoke or delete being committed to the agent socket being closed.',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
