import { z } from 'zod';
import { DAY_MS, parseDuration } from './durations.js';
import { escapeInvisible, unsafeTextProblem } from './text.js';

/**
 * Input schemas of every procedure. They are the only gate between the network and the services, so
 * every string has a length bound and nothing unbounded gets through.
 */

/** Text people write (names, descriptions, reasons): control and invisible characters are refused. */
export const safeText = (max: number) =>
  z
    .string()
    .max(max, { message: `must be at most ${max} characters` })
    .superRefine((s, ctx) => {
      const problem = unsafeTextProblem(s);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    });

/**
 * Text a machine reports (host facts): control characters are refused as in names, but invisible
 * ones are written as `\u{2060}` instead, since refusing them would stop an agent on a host whose
 * OS reports one, and dropping them would let two hosts' names look alike. Escaping is idempotent,
 * so facts the server stores parse to themselves and their digest stays the agent's.
 */
const machineText = (max: number, min = 0) =>
  z
    .string()
    .min(min)
    .max(max)
    .superRefine((s, ctx) => {
      const problem = unsafeTextProblem(s, true);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .transform(escapeInvisible);

export const nameSchema = safeText(64)
  .transform((s) => s.trim())
  .refine((s) => s.length > 0, { message: 'must not be empty' });

export const descriptionSchema = safeText(500);

const id = (prefix: string) =>
  z
    .string()
    .max(64)
    .regex(new RegExp(`^${prefix}_[a-z0-9]{1,40}$`), { message: `must be an id starting with ${prefix}_` });

export const groupIdSchema = id('grp');
export const connectorIdSchema = id('con');
export const apiKeyIdSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z]+_[a-z0-9]{1,40}$/, {
    // Any key's id (`ak_…`, or `pk_…` to be told it cannot be deleted): see `api-keys list`.
    message: 'must be a key id as `api-keys list` shows it (ak_…)',
  });

export const hostSchema = z.strictObject({
  hostname: machineText(253, 1),
  os: machineText(128),
  platform: machineText(64),
  release: machineText(128),
  arch: machineText(32),
  cpus: z.number().int().min(0).max(65_536),
  memoryBytes: z
    .number()
    .int()
    .min(0)
    .max(2 ** 53 - 1),
  ips: z.array(z.union([z.ipv4(), z.ipv6()])).max(64),
  machineId: machineText(128),
});
export type HostFacts = z.infer<typeof hostSchema>;

/** An Ed25519 public JWK; a private part (`d`) is refused, since sending it would leak the key. */
export const ed25519PublicJwkSchema = z
  .object({
    kty: z.literal('OKP'),
    crv: z.literal('Ed25519'),
    x: z.string().regex(/^[A-Za-z0-9_-]{43}$/, { message: 'must be a 32-byte base64url value' }),
    kid: z.string().max(128).optional(),
    alg: z.literal('EdDSA').optional(),
    use: z.literal('sig').optional(),
  })
  .strict();
export type Ed25519PublicJwk = z.infer<typeof ed25519PublicJwkSchema>;

export const enrollInput = z.strictObject({
  provisioningKey: z.string().min(1).max(200),
  publicKey: ed25519PublicJwkSchema,
  host: hostSchema,
  agentVersion: safeText(64).min(1),
  name: nameSchema.optional(),
  /**
   * The URL the agent enrolls through (its --server): a server that knows its public URL refuses an
   * enrollment through another one (PROOF_INVALID) before the key is used, since every session the
   * agent then opened through it would be refused. Older agents send none: not checked.
   */
  serverUrl: z.string().min(1).max(2048).optional(),
});

/** Bounds of a provisioning key's own lifetime (`ttl`): at least a second, at most a year. */
export const KEY_TTL_BOUNDS_MS = { min: 1000, max: 365 * DAY_MS } as const;
/** The most enrollments one key may be limited to (beyond it, leave the limit off). */
export const MAX_KEY_USES = 1_000_000;

/** A key lifetime such as `90s`, `2h`, `30d`, within KEY_TTL_BOUNDS_MS; parsed to milliseconds. */
export const keyTtlSchema = z
  .string()
  .max(32)
  .transform((text, ctx) => {
    let value: number;
    try {
      value = parseDuration(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
    if (value < KEY_TTL_BOUNDS_MS.min || value > KEY_TTL_BOUNDS_MS.max) {
      ctx.addIssue({ code: 'custom', message: 'must be between 1s and 365d' });
      return z.NEVER;
    }
    return value;
  });

/** A group's first key may have a policy of its own, as a regenerated one may (see keyRegenerateInput). */
export const groupCreateInput = z.strictObject({
  name: nameSchema,
  description: descriptionSchema.optional(),
  maxUses: z.number().int().min(1).max(MAX_KEY_USES).optional(),
  ttl: keyTtlSchema.optional(),
});
export const groupRefInput = z.strictObject({ groupId: groupIdSchema });
export const groupUpdateInput = z.strictObject({
  groupId: groupIdSchema,
  name: nameSchema.optional(),
  description: descriptionSchema.optional(),
});
/** `provisioningKeys.regenerate`: the new key's policy; unset, no use limit and the server's --key-ttl. */
export const keyRegenerateInput = z.strictObject({
  groupId: groupIdSchema,
  maxUses: z.number().int().min(1).max(MAX_KEY_USES).optional(),
  ttl: keyTtlSchema.optional(),
});

export const groupDeleteInput = z.strictObject({
  groupId: groupIdSchema,
  force: z.boolean().optional(),
  /**
   * How many connectors the caller saw in the group (the console's confirmation): with more there
   * now (a host enrolled meanwhile), the delete is refused GROUP_NOT_EMPTY instead of taking them too.
   */
  expectedConnectors: z.number().int().min(0).max(1_000_000_000).optional(),
});
export const emptyInput = z.strictObject({}).optional();

export const connectorStatusSchema = z.enum(['enabled', 'disabled', 'revoked']);
export const connectionStateSchema = z.enum(['connected', 'disconnected', 'never']);
/** The most connectors one `connectors.list` page holds. */
export const MAX_CONNECTORS_PAGE = 1000;
export const connectorListInput = z.strictObject({
  groupId: groupIdSchema.optional(),
  status: connectorStatusSchema.optional(),
  connection: connectionStateSchema.optional(),
  cursor: z
    .string()
    .max(200)
    .regex(/^[A-Za-z0-9_-]+$/)
    .optional(),
  limit: z.number().int().min(1).max(MAX_CONNECTORS_PAGE).optional(),
  /** Connectors whose name, hostname or id contains this (case-insensitive). */
  search: z.string().trim().min(1).max(100).optional(),
});
export const connectorRefInput = z.strictObject({
  connectorId: connectorIdSchema,
  reason: safeText(500).optional(),
});

export const apiKeyScopeSchema = z.enum(['read', 'admin']);
export const apiKeyCreateInput = z.strictObject({
  name: nameSchema,
  scope: apiKeyScopeSchema.default('admin'),
  expiresInDays: z.number().int().min(1).max(3650).optional(),
});
export const apiKeyDeleteInput = z.strictObject({ id: apiKeyIdSchema, force: z.boolean().optional() });

/** A signing key's kid: its RFC 7638 thumbprint, base64url. */
export const signingKeyIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,128}$/, 'not a signing key id');
export const signingKeyRotateInput = z
  .strictObject({
    /** Seconds until the new key signs; 0 activates it at once. @default 600 */
    activateInSeconds: z
      .number()
      .int()
      .min(0)
      .max(365 * 86_400)
      .optional(),
  })
  .optional();
export const signingKeyRetireInput = z.strictObject({
  kid: signingKeyIdSchema,
  force: z.boolean().optional(),
});

/** The most events one `audit.list` page holds. */
export const MAX_AUDIT_PAGE = 10_000;
export const auditListInput = z
  .strictObject({
    since: z.iso.datetime({ offset: true }).optional(),
    /** The id of the last event of the previous page: the next page, older events. */
    before: id('evt').optional(),
    limit: z.number().int().min(1).max(MAX_AUDIT_PAGE).optional(),
    type: z
      .string()
      .max(64)
      .regex(/^[a-z_.]+$/)
      .optional(),
    /** true: only events flagged `security`; false: only the others. */
    security: z.boolean().optional(),
  })
  .optional();

export const reportInput = z.strictObject({ host: hostSchema });
/** `agent.acknowledge`: the agent heard the session's final `revoked` or `deleted` event and wiped its identity. */
export const acknowledgeInput = z.strictObject({ event: z.enum(['revoked', 'deleted']) });

/** What the agent puts in connectionParams (tRPC sends them as strings). */
export const sessionParamsSchema = z.strictObject({
  identity: z.string().min(1).max(8192),
  proof: z.string().min(1).max(8192),
});
