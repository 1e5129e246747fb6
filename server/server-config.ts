import { DAY_MS } from '../shared/durations.js';
import type { ListenAddress } from './http/endpoints.js';
import type { LogFormat } from './logging.js';
import { DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES } from './services/audit.js';
import { DEFAULT_AUDIT_RETENTION_MS } from './services/audit-retention.js';
import type { Policy } from './services/deps.js';
import { DEFAULT_RATE_LIMITS, type RateLimits } from './services/rate-limit.js';
import type { WhenCutOff } from './sessions/cut-off.js';
import { DEFAULT_FEED_RETENTION } from './store/postgres/feed-retention.js';

// The server's settings and their defaults, apart from the code that parses flags (config.ts) and
// the code that starts the server (app.ts), so that both, the CLIs and the tests import them from here.

/** The `iss` of every identity this server signs. */
export const ISSUER = 'connector-enrollment';

/**
 * How long a JWKS response may be cached (`Cache-Control: public, max-age`): well under the default
 * 10 minutes a rotated-in key waits before it signs, so any cache has the new key before it is used.
 */
export const JWKS_MAX_AGE_SECONDS = 60;

/**
 * The server pings an agent's websocket after this long without a message from it (agents ping
 * every 45 s themselves, so it pings only a quiet or stuck peer), and cuts it off when no pong comes
 * within AGENT_PONG_WAIT_MS.
 */
export const AGENT_PING_MS = 60_000;
export const AGENT_PONG_WAIT_MS = 15_000;

export interface ServerConfig extends Policy {
  dataDir: string;
  host: string;
  port: number;
  publicUrl: string | null;
  tlsCertFile: string | null;
  tlsKeyFile: string | null;
  logLevel: string;
  /** `text` for people, `json` (pino's lines) for collectors. @default text on a terminal, else json */
  logFormat: LogFormat;
  /** A separate listener for /metrics and /healthz (plain HTTP); when set, the main one has no /metrics. @default null */
  metricsListen: ListenAddress | null;
  /**
   * Proxies (addresses and CIDRs) whose `X-Forwarded-For` tells the client's address; see
   * clientAddressResolver. @default [] (none: the TCP peer is the client)
   */
  trustedProxies: string[];
  /** PostgreSQL for the state, shared by replicas (--database-url); null: the data dir's embedded store. */
  databaseUrl: string | null;
  /**
   * With a database: the file holding the secret every replica shares (--secret-file), read instead
   * of `<dataDir>/secret.key` and never created. @default null
   */
  secretFile: string | null;
  /** `serve --new-admin-key`: write a new admin key at start even though admin keys exist. */
  newAdminKey: boolean;
  /**
   * With a database: audit events older than this are removed from the audit table
   * (--audit-retention); null keeps every event. @default 34560000000 (400 days)
   */
  auditRetentionMs: number | null;
  /**
   * With a database: how long the change feed keeps a change some replica has not read
   * (--feed-max-age); read by every live replica, a change goes after 10 minutes. @default 3600000 (1 h)
   */
  feedMaxAgeMs: number;
  /**
   * With a database: what a replica that has not reached it for 12 s does with its agents' sessions
   * (--when-cut-off; see sessions/cut-off.ts). @default 'end-sessions'
   */
  whenCutOff: WhenCutOff;
  /** How often a replica tells the database it is alive (tuning, tests; no flag). @default 5000 */
  replicaHeartbeatMs?: number;
  /**
   * How old a replica's heartbeat is when the others count it dead; every replica must have the
   * same (tuning, tests; no flag). @default 15000
   */
  replicaDeadAfterMs?: number;
  /**
   * How long a revoke or delete waits for the agent's acknowledgement (tuning; no flag: the bound the
   * README promises). @default TERMINATION_ACK_TIMEOUT_MS (750)
   */
  terminationAckTimeoutMs?: number;
  /** How often each replica runs audit retention (tuning; no flag). @default 3600000 (1 h) */
  auditPruneIntervalMs?: number;
  rateLimits: RateLimits;
  /** Largest HTTP request body accepted. @default 65536 */
  maxBodyBytes: number;
  /** Largest websocket message accepted. @default 65536 */
  maxWsMessageBytes: number;
  /** How long a new websocket may take to send its connectionParams. @default 10000 */
  handshakeTimeoutMs: number;
  /** Where the built admin console is served from (tests point it elsewhere; no flag). @default web/dist */
  consoleDir?: string;
  /**
   * How long after its 101 a websocket waiting for its connectionParams is spared when every
   * handshake slot (or unauthenticated connection) is taken and a newcomer needs one (tuning; no
   * flag: tests shorten it). @default HANDSHAKE_GRACE_MS (3000)
   */
  handshakeGraceMs?: number;
  /**
   * How long a connection may take to send a request's headers (an upgrade's too) before it is
   * answered 408 and closed: what a stranger holding half-sent requests gets. @default 10000
   */
  headersTimeoutMs: number;
  /** See ConnectionLimits.maxUnauthenticatedPerAddress. @default 1024 */
  maxUnauthenticatedPerAddress: number;
  /** See ConnectionLimits.maxUnauthenticated. @default null: a quarter of the open-file limit */
  maxUnauthenticatedConnections: number | null;
  /** The process's open-file limit (tests lower it). @default read from /proc/self/limits */
  fileLimit?: number | null;
  /**
   * Live agent sessions allowed from one source address; generous because a NAT'd fleet shares
   * one address. @default 20000
   */
  maxSessionsPerAddress: number;
  /**
   * Websocket handshakes in progress (from the upgrade request until the agent is authenticated or
   * refused) beyond which new upgrades are answered `503` with `Retry-After` at once, so agents
   * are told to come back instead of waiting out their handshake timeout behind a queue the server
   * cannot serve in time. A slot is held for the agent's round trip too (its connectionParams come
   * after the upgrade), so the cap bounds sockets waiting, not CPU work: that is bounded by the
   * authentication turns (16 per event-loop turn). Large because agents answer slowly under load:
   * a small cap sheds the same agents over and over (BENCHMARKS.md, "Since the first reference
   * run"). @default 4096
   */
  maxHandshakesInProgress: number;
  /**
   * Sessions of a group ended or told per event-loop turn when a whole group is deleted, disabled
   * or enabled (tuning; no flag). @default 128
   */
  sessionsPerTurn?: number;
  /**
   * After a signing key activates, connected agents holding identities signed by another key get a
   * new one at random times over this window. @default 600000 (10 min)
   */
  rotationSpreadMs: number;
  /**
   * How long an agent's websocket may stay quiet before the server pings it (tuning; no flag: tests
   * shorten it). A proxy in front must keep idle websockets open longer than this. @default 60000
   */
  agentPingMs?: number;
  /** Past this size `audit.jsonl` is rotated to `audit.jsonl.1`. @default 67108864 (64 MiB) */
  auditMaxBytes: number;
  /** Rotated audit files kept (`audit.jsonl.1` … `.<n>`); older ones are removed. @default 10 */
  auditKeep: number;
}

/** Every setting at its default, with `overrides` on top. */
export function defaultConfig(overrides: Partial<ServerConfig> = {}): ServerConfig {
  return {
    dataDir: './data',
    host: '127.0.0.1',
    port: 7420,
    publicUrl: null,
    tlsCertFile: null,
    tlsKeyFile: null,
    logLevel: 'info',
    logFormat: 'json',
    metricsListen: null,
    databaseUrl: null,
    trustedProxies: [],
    secretFile: null,
    newAdminKey: false,
    auditRetentionMs: DEFAULT_AUDIT_RETENTION_MS,
    feedMaxAgeMs: DEFAULT_FEED_RETENTION.maxAgeMs,
    whenCutOff: 'end-sessions',
    keyTtlMs: 14 * DAY_MS,
    identityTtlMs: 365 * DAY_MS,
    pendingTtlMs: 7 * DAY_MS,
    rateLimits: DEFAULT_RATE_LIMITS,
    maxBodyBytes: 65_536,
    maxWsMessageBytes: 65_536,
    handshakeTimeoutMs: 10_000,
    headersTimeoutMs: 10_000,
    maxUnauthenticatedPerAddress: 1024,
    maxUnauthenticatedConnections: null,
    maxSessionsPerAddress: 20_000,
    maxHandshakesInProgress: 4096,
    rotationSpreadMs: 10 * 60_000,
    auditMaxBytes: DEFAULT_AUDIT_MAX_BYTES,
    auditKeep: DEFAULT_AUDIT_KEEP,
    ...overrides,
  };
}
