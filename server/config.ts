import { z } from 'zod';
import { parseDuration } from '../shared/durations.js';
import { defaultConfig, type ServerConfig } from './app.js';
import { DEFAULT_RATE_LIMITS } from './services/rate-limit.js';

// Parsed in shared/ since procedure inputs (a key's ttl) take the same durations; re-exported for the CLIs.
export { parseDuration };

const duration = z.string().transform((text, ctx) => {
  try {
    return parseDuration(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

const serveOptionsSchema = z.object({
  dataDir: z.string().min(1),
  host: z.string().min(1),
  port: z.coerce.number().int().min(0).max(65_535),
  publicUrl: z.url().optional(),
  keyTtl: duration,
  identityTtl: duration,
  pendingTtl: duration,
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  enrollRatePerMinute: z.coerce.number().int().min(1).optional(),
  maxSessionsPerAddress: z.coerce.number().int().min(1).optional(),
  maxHandshakesInProgress: z.coerce.number().int().min(1).optional(),
  rotationSpread: duration,
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
  enrollRatePerMinute: {
    flag: '--enroll-rate-per-minute <n>',
    env: 'CONNECTOR_ENROLL_RATE_PER_MINUTE',
    default: undefined,
    help: `enrollment requests per source address per minute (default ${DEFAULT_RATE_LIMITS.enrollPerAddressPerMinute})`,
  },
  maxSessionsPerAddress: {
    flag: '--max-sessions-per-address <n>',
    env: 'CONNECTOR_MAX_SESSIONS_PER_ADDRESS',
    default: undefined,
    help: `live agent sessions allowed from one source address (default ${defaultConfig().maxSessionsPerAddress})`,
  },
  maxHandshakesInProgress: {
    flag: '--max-handshakes-in-progress <n>',
    env: 'CONNECTOR_MAX_HANDSHAKES_IN_PROGRESS',
    default: undefined,
    help: `websocket handshakes being authenticated at once; more are answered 503 with Retry-After (default ${defaultConfig().maxHandshakesInProgress})`,
  },
  rotationSpread: {
    flag: '--rotation-spread <duration>',
    env: 'CONNECTOR_ROTATION_SPREAD',
    default: '10m',
    help: 'after a signing key activates, connected agents get identities signed by it at random times over this window',
  },
} as const;

export type ServeFlagValues = Partial<Record<keyof typeof SERVE_FLAGS, string>>;

/** Merges flags, environment and defaults, validates them once, and returns the server's config. */
export function parseServeConfig(flags: ServeFlagValues, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const merged: Record<string, string | undefined> = {};
  for (const [name, spec] of Object.entries(SERVE_FLAGS)) {
    merged[name] = flags[name as keyof ServeFlagValues] ?? env[spec.env] ?? spec.default;
  }
  const parsed = serveOptionsSchema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const spec = SERVE_FLAGS[i.path[0] as keyof typeof SERVE_FLAGS];
      return `${spec ? spec.flag.split(' ')[0] : i.path.join('.')}: ${i.message}`;
    });
    throw new Error(problems.join('\n'));
  }
  const o = parsed.data;
  if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new Error('--tls-cert and --tls-key go together');
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
    rotationSpreadMs: o.rotationSpread,
    ...(o.maxSessionsPerAddress ? { maxSessionsPerAddress: o.maxSessionsPerAddress } : {}),
    ...(o.maxHandshakesInProgress ? { maxHandshakesInProgress: o.maxHandshakesInProgress } : {}),
    rateLimits: {
      ...DEFAULT_RATE_LIMITS,
      ...(o.enrollRatePerMinute ? { enrollPerAddressPerMinute: o.enrollRatePerMinute } : {}),
    },
  });
}
