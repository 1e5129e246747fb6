import { z } from 'zod';
import { DAY_MS } from '../shared/durations.js';
import { blockedPortProblem, portOf } from '../shared/fetch-blocked-ports.js';
import {
  byteSize,
  durationFlag,
  listenAddress,
  parseAuditRetention,
  parseDatabaseUrl,
  parsedFlag,
  parseFeedMaxAge,
  publicOriginOf,
  wholeNumber,
} from './flag-values.js';
import { parseTrustedProxies } from './http/client-address.js';
import { defaultLogFormat } from './logging.js';
import { defaultConfig, type ServerConfig } from './server-config.js';
import { DEFAULT_AUDIT_RETENTION_MS } from './services/audit-retention.js';
import { DEFAULT_RATE_LIMITS } from './services/rate-limit.js';
import { cutOffAfterMs, WHEN_CUT_OFF } from './sessions/cut-off.js';
import { DEFAULT_FEED_RETENTION } from './store/postgres/feed-retention.js';

const serveOptionsSchema = z.object({
  dataDir: z.string().min(1),
  host: z.string().min(1),
  port: wholeNumber(0, 65_535, ' (0: any free port)'),
  // http(s) with a host, and nothing past the origin but a path: the proofs agents sign are bound
  // to its origin, and a value without one ("localhost:7420" reads as a scheme) bound them to none.
  publicUrl: z
    .string()
    .refine((text) => publicOriginOf(text) !== null, {
      message:
        'must be an http:// or https:// URL with a host, as agents reach the server (e.g. https://enroll.example.com)',
    })
    .optional(),
  keyTtl: durationFlag,
  identityTtl: durationFlag,
  pendingTtl: durationFlag,
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  logFormat: z.enum(['text', 'json']).optional(),
  enrollRatePerMinute: wholeNumber(1).optional(),
  adminAuthFailuresPerMinute: wholeNumber(1).optional(),
  maxSessionsPerAddress: wholeNumber(1).optional(),
  maxHandshakesInProgress: wholeNumber(1).optional(),
  maxUnauthenticatedPerAddress: wholeNumber(1).optional(),
  maxUnauthenticatedConnections: wholeNumber(1).optional(),
  rotationSpread: durationFlag,
  auditMaxBytes: byteSize.pipe(z.number().min(4096, 'must be at least 4KiB')),
  auditKeep: wholeNumber(1, 1000),
  metricsListen: listenAddress.optional(),
  databaseUrl: parsedFlag(parseDatabaseUrl).optional(),
  trustedProxies: parsedFlag(parseTrustedProxies).optional(),
  secretFile: z.string().min(1).optional(),
  auditRetention: parsedFlag(parseAuditRetention).optional(),
  feedMaxAge: parsedFlag(parseFeedMaxAge).optional(),
  whenCutOff: z.enum(WHEN_CUT_OFF).optional(),
});

/** The `serve` flags, each also read from CONNECTOR_<FLAG> (the flag wins). */
export const SERVE_FLAGS = {
  dataDir: {
    flag: '--data-dir <dir>',
    env: 'CONNECTOR_DATA_DIR',
    default: './data',
    help: 'where the store, keys and audit log live',
  },
  host: { flag: '--host <host>', env: 'CONNECTOR_HOST', default: '127.0.0.1', help: 'address to listen on' },
  port: {
    flag: '--port <port>',
    env: 'CONNECTOR_PORT',
    default: '7420',
    help: 'port for HTTP and websockets (0: any free port)',
  },
  publicUrl: {
    flag: '--public-url <url>',
    env: 'CONNECTOR_PUBLIC_URL',
    default: undefined,
    help: 'URL agents use to reach this server; set it: session proofs made for any other server are then refused',
  },
  keyTtl: {
    flag: '--key-ttl <duration>',
    env: 'CONNECTOR_KEY_TTL',
    default: '14d',
    help: 'lifetime of provisioning keys',
  },
  identityTtl: {
    flag: '--identity-ttl <duration>',
    env: 'CONNECTOR_IDENTITY_TTL',
    default: '365d',
    help: 'lifetime of connector identities',
  },
  pendingTtl: {
    flag: '--pending-ttl <duration>',
    env: 'CONNECTOR_PENDING_TTL',
    default: '7d',
    help: 'remove connectors that never connect after this',
  },
  tlsCert: {
    flag: '--tls-cert <file>',
    env: 'CONNECTOR_TLS_CERT',
    default: undefined,
    help: 'PEM certificate: serve HTTPS and WSS',
  },
  tlsKey: {
    flag: '--tls-key <file>',
    env: 'CONNECTOR_TLS_KEY',
    default: undefined,
    help: 'PEM private key for --tls-cert',
  },
  logLevel: {
    flag: '--log-level <level>',
    env: 'CONNECTOR_LOG_LEVEL',
    default: 'info',
    help: 'fatal, error, warn, info, debug, trace or silent',
  },
  logFormat: {
    flag: '--log-format <format>',
    env: 'CONNECTOR_LOG_FORMAT',
    default: undefined,
    help: 'text (readable times) or json (one pino JSON object a line); default text when stdout is a terminal, json otherwise',
  },
  enrollRatePerMinute: {
    flag: '--enroll-rate-per-minute <n>',
    env: 'CONNECTOR_ENROLL_RATE_PER_MINUTE',
    default: undefined,
    help: `enrollment requests per source address per minute (default ${DEFAULT_RATE_LIMITS.enrollPerAddressPerMinute})`,
  },
  adminAuthFailuresPerMinute: {
    flag: '--admin-auth-failures-per-minute <n>',
    env: 'CONNECTOR_ADMIN_AUTH_FAILURES_PER_MINUTE',
    default: undefined,
    help: `admin calls without a valid admin key allowed per source address per minute; more are answered 429 (a valid key still gets in) (default ${DEFAULT_RATE_LIMITS.adminAuthFailuresPerMinute})`,
  },
  maxSessionsPerAddress: {
    flag: '--max-sessions-per-address <n>',
    env: 'CONNECTOR_MAX_SESSIONS_PER_ADDRESS',
    default: undefined,
    help: `live agent sessions allowed from one source address, counted by each replica for itself (default ${defaultConfig().maxSessionsPerAddress})`,
  },
  maxHandshakesInProgress: {
    flag: '--max-handshakes-in-progress <n>',
    env: 'CONNECTOR_MAX_HANDSHAKES_IN_PROGRESS',
    default: undefined,
    help: `websocket handshakes being authenticated at once; more are answered 503 with Retry-After (default ${defaultConfig().maxHandshakesInProgress})`,
  },
  maxUnauthenticatedPerAddress: {
    flag: '--max-unauthenticated-per-address <n>',
    env: 'CONNECTOR_MAX_UNAUTHENTICATED_PER_ADDRESS',
    default: undefined,
    help: `open connections one source address may hold without an authenticated agent session; more are answered 429 and closed (default ${defaultConfig().maxUnauthenticatedPerAddress})`,
  },
  maxUnauthenticatedConnections: {
    flag: '--max-unauthenticated-connections <n>',
    env: 'CONNECTOR_MAX_UNAUTHENTICATED_CONNECTIONS',
    default: undefined,
    help: 'open connections without an authenticated agent session, from all addresses; more are answered 503 and closed (default a quarter of the open-file limit, at least 64)',
  },
  rotationSpread: {
    flag: '--rotation-spread <duration>',
    env: 'CONNECTOR_ROTATION_SPREAD',
    default: '10m',
    help: 'after a signing key activates, connected agents get identities signed by it at random times over this window',
  },
  auditMaxBytes: {
    flag: '--audit-max-bytes <size>',
    env: 'CONNECTOR_AUDIT_MAX_BYTES',
    default: '64MiB',
    help: 'rotate audit.jsonl to audit.jsonl.1 once it passes this size (bytes, or KiB, MiB, GiB)',
  },
  auditKeep: {
    flag: '--audit-keep <n>',
    env: 'CONNECTOR_AUDIT_KEEP',
    default: '10',
    help: 'rotated audit files kept (audit.jsonl.1 … audit.jsonl.<n>); older ones are removed',
  },
  metricsListen: {
    flag: '--metrics-listen <host:port>',
    env: 'CONNECTOR_METRICS_LISTEN',
    default: undefined,
    help: 'serve /metrics (and /healthz) on this separate plain-HTTP address instead of the main one, e.g. 127.0.0.1:9464',
  },
  databaseUrl: {
    flag: '--database-url <url>',
    env: 'CONNECTOR_DATABASE_URL',
    default: undefined,
    help: 'keep the state in PostgreSQL (postgres://…) instead of the data dir, so that several replicas can serve one deployment; prefer the env variable (argv is visible to other users)',
  },
  trustedProxies: {
    flag: '--trusted-proxies <list>',
    env: 'CONNECTOR_TRUSTED_PROXIES',
    default: undefined,
    help: 'addresses and CIDRs of proxies in front (e.g. 127.0.0.1,10.0.0.0/8): a request from one of them is counted, limited and audited under the client address in its X-Forwarded-For (the rightmost one not itself a trusted proxy); default none: the TCP peer',
  },
  secretFile: {
    flag: '--secret-file <file>',
    env: 'CONNECTOR_SECRET_FILE',
    default: undefined,
    help: "with --database-url: read the secret every replica shares from this file (mode 0600, the first replica's secret.key) instead of the data dir's secret.key",
  },
  feedMaxAge: {
    flag: '--feed-max-age <duration>',
    env: 'CONNECTOR_FEED_MAX_AGE',
    default: undefined,
    help: `with --database-url: how long the change feed keeps a change some replica has not read (5m..7d); a replica away longer loads the whole state when it is back instead of reading what it missed (default ${DEFAULT_FEED_RETENTION.maxAgeMs / 3_600_000}h)`,
  },
  auditRetention: {
    flag: '--audit-retention <duration>',
    env: 'CONNECTOR_AUDIT_RETENTION',
    default: undefined,
    help: `with --database-url: remove audit events older than this (at least 1d) from the audit table, hourly, one replica at a time; forever keeps every event (default ${DEFAULT_AUDIT_RETENTION_MS / DAY_MS}d)`,
  },
  whenCutOff: {
    flag: '--when-cut-off <mode>',
    env: 'CONNECTOR_WHEN_CUT_OFF',
    default: undefined,
    help: `with --database-url: what a replica that has not reached the database for ${cutOffAfterMs(15_000) / 1000} s does with its agents' sessions, since it can no longer hear a revoke made through another replica: end-sessions (default) closes them (1012, not final) so they reconnect to a replica that can; keep-sessions keeps them until the database answers again`,
  },
} as const;

export type ServeFlagValues = Partial<Record<keyof typeof SERVE_FLAGS, string>>;

/** Merges flags, environment and defaults, validates them once, and returns the server's config. */
export function parseServeConfig(flags: ServeFlagValues, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const merged: Record<string, string | undefined> = {};
  const fromEnv = new Set<string>();
  /** The settings the operator gave (a flag or the environment), as against defaults. */
  const given = new Set<string>();
  for (const [name, spec] of Object.entries(SERVE_FLAGS)) {
    const flag = flags[name as keyof ServeFlagValues];
    if (flag === undefined && env[spec.env] !== undefined) fromEnv.add(name);
    if (flag !== undefined || env[spec.env] !== undefined) given.add(name);
    merged[name] = flag ?? env[spec.env] ?? spec.default;
  }
  /** A given setting's name as the operator wrote it: the flag, or its environment variable. */
  const named = (name: keyof typeof SERVE_FLAGS) =>
    fromEnv.has(name) ? SERVE_FLAGS[name].env : (SERVE_FLAGS[name].flag.split(' ')[0] as string);
  const parsed = serveOptionsSchema.safeParse(merged);
  if (!parsed.success) {
    // Named where the operator wrote it: a bad value from the environment is not fixed in argv.
    const problems = parsed.error.issues.map((i) => {
      const name = String(i.path[0]);
      const spec = SERVE_FLAGS[name as keyof typeof SERVE_FLAGS];
      if (!spec) return `${i.path.join('.')}: ${i.message}`;
      return `${fromEnv.has(name) ? spec.env : spec.flag.split(' ')[0]}: ${i.message}`;
    });
    throw new Error(problems.join('\n'));
  }
  const o = parsed.data;
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new Error('--tls-cert and --tls-key go together');
  // One server keeps its secret in its data dir, where backup and restore find it.
  if (o.secretFile && !o.databaseUrl)
    throw new Error(
      '--secret-file goes with --database-url (replicas share one secret); a server without a database keeps its secret in <data-dir>/secret.key',
    );
  if (o.whenCutOff !== undefined && !o.databaseUrl)
    throw new Error(
      '--when-cut-off goes with --database-url (a server without a database is never cut off from its store)',
    );
  if (o.feedMaxAge !== undefined && !o.databaseUrl)
    throw new Error('--feed-max-age goes with --database-url (the change feed between replicas)');
  if (o.auditRetention !== undefined && !o.databaseUrl)
    throw new Error(
      '--audit-retention goes with --database-url (the audit table); a server without a database rotates audit.jsonl by size: use --audit-max-bytes and --audit-keep',
    );
  // Its own listener binds first: on the main port the main listener would fail "in use", blamed on --port.
  if (o.metricsListen && o.port !== 0 && o.metricsListen.port === o.port)
    throw new Error(
      `${named('metricsListen')}: port ${o.port} is the server's own (${named('port')}): give the metrics listener another port`,
    );
  // They would do nothing: the audit log is a table there, which --audit-retention bounds.
  for (const name of ['auditMaxBytes', 'auditKeep'] as const)
    if (given.has(name) && o.databaseUrl)
      throw new Error(
        `${named(name)} goes with a server without --database-url (it rotates audit.jsonl); with --database-url the audit log is a table: bound it with --audit-retention`,
      );
  // Clients reach the public URL when there is one (a proxy's port), else this very port.
  const reachedOn = o.publicUrl ? portOf(new URL(o.publicUrl)) : o.port;
  const blocked = reachedOn === 0 ? null : blockedPortProblem(reachedOn);
  if (blocked) throw new Error(`${named(o.publicUrl ? 'publicUrl' : 'port')}: ${blocked}`);
  return defaultConfig({
    dataDir: o.dataDir,
    host: o.host,
    port: o.port,
    publicUrl: o.publicUrl ?? null,
    keyTtlMs: o.keyTtl,
    identityTtlMs: o.identityTtl,
    pendingTtlMs: o.pendingTtl,
    tlsCertFile: o.tlsCert ?? null,
    tlsKeyFile: o.tlsKey ?? null,
    logLevel: o.logLevel,
    logFormat: o.logFormat ?? defaultLogFormat(),
    rotationSpreadMs: o.rotationSpread,
    auditMaxBytes: o.auditMaxBytes,
    auditKeep: o.auditKeep,
    metricsListen: o.metricsListen ?? null,
    databaseUrl: o.databaseUrl ?? null,
    trustedProxies: o.trustedProxies ?? [],
    secretFile: o.secretFile ?? null,
    auditRetentionMs: o.auditRetention === undefined ? DEFAULT_AUDIT_RETENTION_MS : o.auditRetention,
    feedMaxAgeMs: o.feedMaxAge ?? DEFAULT_FEED_RETENTION.maxAgeMs,
    whenCutOff: o.whenCutOff ?? 'end-sessions',
    ...(o.maxSessionsPerAddress ? { maxSessionsPerAddress: o.maxSessionsPerAddress } : {}),
    ...(o.maxHandshakesInProgress ? { maxHandshakesInProgress: o.maxHandshakesInProgress } : {}),
    ...(o.maxUnauthenticatedPerAddress
      ? { maxUnauthenticatedPerAddress: o.maxUnauthenticatedPerAddress }
      : {}),
    maxUnauthenticatedConnections: o.maxUnauthenticatedConnections ?? null,
    rateLimits: {
      ...DEFAULT_RATE_LIMITS,
      ...(o.enrollRatePerMinute ? { enrollPerAddressPerMinute: o.enrollRatePerMinute } : {}),
      ...(o.adminAuthFailuresPerMinute ? { adminAuthFailuresPerMinute: o.adminAuthFailuresPerMinute } : {}),
    },
  });
}
