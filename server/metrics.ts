import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The server's Prometheus metrics, in a registry of their own so that several servers can share a process (tests). */
export function createMetrics() {
  const registry = new Registry();
  const registers = [registry];
  // One line a metric: its name, its help, and its labels (or a histogram's buckets).
  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers });
  const gauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Gauge<L>({ name, help, labelNames, registers });
  const histogram = (name: string, help: string, buckets: number[]) =>
    new Histogram({ name, help, buckets, registers });
  return {
    registry,
    enrollments: counter(
      'connector_enrollments_total',
      'Enrollment attempts by outcome (success or the refusal reason).',
      ['outcome'],
    ),
    connectors: gauge(
      'connector_connectors',
      'Stored connectors by state (enabled, disabled, revoked, connected, disconnected, never).',
      ['state'],
    ),
    sessions: gauge('connector_sessions_live', 'Agent sessions connected now.'),
    replicasLive: gauge(
      'connector_replicas_live',
      'Live server replicas of the deployment, this one included, as its last heartbeat read them (every 5 s); 1 for a server alone.',
    ),
    consoleSockets: gauge(
      'connector_console_sockets',
      'Admin (console) websockets open now, authenticated with an admin key; not agent sessions.',
    ),
    sessionConnects: counter('connector_session_connects_total', 'Agent sessions accepted.'),
    sessionReplacements: counter(
      'connector_sessions_replaced_total',
      'Agent sessions replaced by a newer session with the same identity (a clone, or a reconnect over a stale socket).',
    ),
    sessionRefusals: counter('connector_session_refusals_total', 'Agent sessions refused, by reason.', [
      'reason',
    ]),
    hostReports: counter(
      'connector_host_reports_total',
      'Host-facts reports from agents (agent.report); an agent sends one only when its facts changed.',
    ),
    handshakesInProgress: gauge(
      'connector_handshakes_in_progress',
      'Websocket handshakes between the upgrade request and the end of their authentication.',
    ),
    handshakesShed: counter(
      'connector_handshakes_shed_total',
      'Websocket upgrades answered 503 with Retry-After because too many handshakes were in progress.',
    ),
    handshakesEvicted: counter(
      'connector_handshakes_evicted_total',
      'Websocket handshakes closed (4408) to make room for a new one, every slot taken: the one waiting longest for its connectionParams, past the grace.',
    ),
    agentMessagesLimited: counter(
      'connector_agent_messages_limited_total',
      'Agent sockets closed (4429) for sending more messages than a session may: a broken or misused agent.',
    ),
    adminAuthFailures: counter(
      'connector_admin_auth_failures_total',
      'Admin API calls without a valid admin key (missing, unknown, wrong or expired), whatever the answer.',
    ),
    adminAuthRateLimited: counter(
      'connector_admin_auth_rate_limited_total',
      'Admin API calls without a valid admin key answered 429 because their address had too many such calls in the window.',
    ),
    connectionsOpen: gauge(
      'connector_connections_open',
      'Connections open on the main listener, of every kind.',
    ),
    connectionsUnauthenticated: gauge(
      'connector_connections_unauthenticated',
      "Connections open on the main listener that carry no authenticated agent session and no admin call with a valid key since its last request (enrollment calls, an admin's call until its key is accepted, handshakes, idle strangers).",
    ),
    connectionsRefused: counter(
      'connector_connections_refused_total',
      'Connections closed at once, by reason: address_limit (too many unauthenticated from its address), unauthenticated_limit (too many in total, none of them idle), idle_evicted (the oldest idle unauthenticated one, closed to make room past the total), file_limit (close to the open-file limit).',
      ['reason'],
    ),
    acceptErrors: counter(
      'connector_accept_errors_total',
      'Connections the kernel could not hand over (EMFILE and the like: the open-file limit was reached).',
      ['code'],
    ),
    feedRowsPruned: counter(
      'connector_store_feed_rows_pruned_total',
      'Rows this replica pruned from the PostgreSQL change feed (store_changes), with --database-url.',
    ),
    feedReloads: counter(
      'connector_store_feed_reloads_total',
      'Times this replica loaded the whole state again because its memory might differ from the database: changes it had not read were pruned from the change feed (it was cut off longer than the feed keeps rows), or a commit whose answer was lost could not be asked about.',
    ),
    cutOffs: counter(
      'connector_replica_cut_offs_total',
      'Times this replica ended its agent sessions because it had not reached the database for 12 s (--when-cut-off end-sessions), with --database-url.',
    ),
    cutOffSessions: counter(
      'connector_replica_cut_off_sessions_total',
      'Agent sessions this replica ended for that reason.',
    ),
    feedLagSeconds: histogram(
      'connector_store_feed_lag_seconds',
      "With --database-url: for each other replica's change as this replica applies it, the time since its transaction began (its commit, the notification, this replica's read of the change feed; the database host's clock against this one's).",
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    ),
    revokeCloseSeconds: histogram(
      'connector_revoke_close_seconds',
      'Time from a revoke or delete being committed to the agent socket being closed.',
      [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    ),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
