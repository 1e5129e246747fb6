import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, Option } from 'commander';
import { z } from 'zod';
import { ERROR_REASONS } from '../../shared/errors.js';
import {
  connectionStateSchema,
  connectorStatusSchema,
  keyTtlSchema,
  MAX_KEY_USES,
} from '../../shared/schemas.js';
import { type AdminClient, createAdminClient, reasonOf, TRPCClientError } from '../admin-client.js';
import { parseDuration, SERVE_FLAGS } from '../config.js';
import { adminFetch, ConnectionProblem, explainUnreachable } from './connection.js';
import { printFields, printTable, relative, replacementWords, terminationWords } from './format.js';

/** The options every admin command takes; a command's own options extend this schema. */
export const adminOptions = z.object({
  server: z.string(),
  adminKeyFile: z.string().optional(),
  caFile: z.string().optional(),
  dataDir: z.string(),
  json: z.boolean().optional(),
});
export type AdminOptions = z.infer<typeof adminOptions>;

/** What the admin commands take from the environment: the defaults their flags override. */
export interface AdminEnv {
  server: string;
  dataDir: string;
  caFile: string | undefined;
  adminKey: string | undefined;
}

/**
 * The environment's part in the admin commands, read once (CONNECTOR_SERVER, CONNECTOR_DATA_DIR,
 * CONNECTOR_CA_FILE, CONNECTOR_ADMIN_KEY); the data dir and the address default as `serve`'s do.
 */
export function adminEnv(env: NodeJS.ProcessEnv): AdminEnv {
  return {
    server: env.CONNECTOR_SERVER ?? `http://${SERVE_FLAGS.host.default}:${SERVE_FLAGS.port.default}`,
    dataDir: env[SERVE_FLAGS.dataDir.env] ?? SERVE_FLAGS.dataDir.default,
    caFile: env.CONNECTOR_CA_FILE,
    adminKey: env.CONNECTOR_ADMIN_KEY?.trim() || undefined,
  };
}

/**
 * A failure the CLI explains and exits on; `exitCode` 2 is a usage error. `reason` is the API's
 * reason when the server gave one (printed in `--json` errors).
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly reason: string | null = null,
  ) {
    super(message);
  }
}

const CONNECTOR_STATUSES = connectorStatusSchema.options;
const CONNECTION_STATES = connectionStateSchema.options;

/** Reasons that mean the command sent input the server could not take: the user's to fix, as a usage error. */
const USAGE_REASONS = new Set(['VALIDATION_FAILED', 'BAD_REQUEST']);

/** A duration flag's value (`90s`, `12h`, `30d`) in milliseconds, or a usage error naming the flag. */
export function durationFlag(flag: string, text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new CliError(`${flag}: ${(error as Error).message}`, 2);
  }
}

/** A whole-number flag's value within [min, max], or a usage error naming the flag. */
export function integerFlag(flag: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || value < min || value > max)
    throw new CliError(`${flag}: "${text}" is not a whole number from ${min} to ${max}`, 2);
  return value;
}

/**
 * The admin key: `--admin-key-file` if given (a flag beats the environment, as everywhere), else
 * CONNECTOR_ADMIN_KEY, else `<data-dir>/admin.key`. Every way it can fail is one line naming the file.
 */
export function resolveAdminKey(
  options: Pick<AdminOptions, 'adminKeyFile' | 'dataDir'>,
  fromEnv: string | undefined,
): string {
  if (!options.adminKeyFile && fromEnv) return fromEnv;
  const flag = options.adminKeyFile ? '--admin-key-file' : null;
  const file = options.adminKeyFile ?? join(options.dataDir, 'admin.key');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !flag)
      throw new CliError(
        `no admin API key: ${file} does not exist; fix: pass --admin-key-file FILE, set CONNECTOR_ADMIN_KEY, or --data-dir the server's data dir`,
        2,
      );
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory, not a file'
          : code === 'EACCES' || code === 'EPERM'
            ? 'permission denied (run as the user that owns it)'
            : (code ?? (error as Error).message);
    throw new CliError(`cannot read the admin key ${flag ? `${flag} ` : ''}${file}: ${why}`, 2);
  }
  const key = text.trim();
  if (!key)
    throw new CliError(
      `the admin key file ${file} is empty; fix: point to the file the server wrote (admin.key)`,
      2,
    );
  return key;
}

/** Explains a failed API call: the reason, what it means and how to fix it. */
export function explain(error: unknown, server: string): CliError {
  const reason = reasonOf(error);
  if (reason) {
    const message = error instanceof Error ? error.message : ERROR_REASONS[reason].message;
    return new CliError(
      `${reason}: ${message}\n  fix: ${ERROR_REASONS[reason].hint}`,
      USAGE_REASONS.has(reason) ? 2 : 1,
      reason,
    );
  }
  if (error instanceof TRPCClientError) return new CliError(explainUnreachable(error, server));
  return error instanceof CliError ? error : new CliError(String((error as Error)?.message ?? error));
}

type Action<O> = (client: AdminClient, options: O, ...args: string[]) => Promise<void>;

/** A subcommand with the options every admin command takes (--server, --admin-key-file, --data-dir, --json). */
export function adminCommand(parent: Command, usage: string, description: string, env: AdminEnv): Command {
  return parent
    .command(usage)
    .description(description)
    .option('--server <url>', 'server URL (env CONNECTOR_SERVER)', env.server)
    .option(
      '--admin-key-file <file>',
      'file holding an admin API key (default: CONNECTOR_ADMIN_KEY, then <data-dir>/admin.key)',
    )
    .option('--data-dir <dir>', 'the server data dir, to find admin.key', env.dataDir)
    .option(
      '--ca-file <file>',
      'PEM certificate of the CA that signed the server certificate, for https:// servers a private CA signed (env CONNECTOR_CA_FILE)',
      env.caFile,
    )
    .option('--json', 'print JSON instead of a table');
}

/** `--max-uses` from `maxUses`: the flag a parsed option came from, for a usage error. */
const flagOf = (key: PropertyKey) => `--${String(key).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** A command's options as its schema types them, or a usage error naming the flag. */
export function parseOptions<S extends z.ZodType<AdminOptions>>(schema: S, values: unknown): z.infer<S> {
  const parsed = schema.safeParse(values);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new CliError(`${flagOf(issue?.path[0] ?? 'options')}: ${issue?.message ?? 'not valid'}`, 2);
}

/** The admin commands' two builders, bound to the environment's defaults (read once, in program.ts). */
export function adminCli(env: AdminEnv) {
  /** Runs `action` with an admin client and the options `schema` parses, explaining any API failure. */
  function withClient<S extends z.ZodType<AdminOptions>>(schema: S, action: Action<z.infer<S>>) {
    return async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const options = parseOptions(schema, command.opts());
      const positional = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
      let transport: typeof fetch | undefined;
      try {
        transport = adminFetch(options.server, options.caFile);
      } catch (error) {
        if (error instanceof ConnectionProblem) throw new CliError(error.message, error.usage ? 2 : 1);
        throw error;
      }
      const client = createAdminClient({
        url: options.server,
        adminKey: resolveAdminKey(options, env.adminKey),
        ...(transport ? { fetch: transport } : {}),
      });
      try {
        await action(client, options, ...positional);
      } catch (error) {
        throw explain(error, options.server);
      }
    };
  }
  return {
    command: (parent: Command, usage: string, description: string) =>
      adminCommand(parent, usage, description, env),
    withClient,
  };
}

export type AdminCli = ReturnType<typeof adminCli>;

/** JSON with --json, else what `human` prints. */
export const print = (options: AdminOptions, value: unknown, human: () => void) => {
  if (options.json) console.log(JSON.stringify(value, null, 2));
  else human();
};

/** GROUP may be an id (`grp_…`) or an exact name. */
async function resolveGroup(client: AdminClient, ref: string): Promise<string> {
  const groups = await client.groups.list.query({});
  const found = groups.find((g) => g.id === ref) ?? groups.find((g) => g.name === ref);
  if (!found)
    throw new CliError(
      `GROUP_NOT_FOUND: no group with id or name "${ref}"\n  fix: ${ERROR_REASONS.GROUP_NOT_FOUND.hint}`,
      1,
      'GROUP_NOT_FOUND',
    );
  return found.id;
}

/** Group names by id, for tables. */
async function groupNamesOf(client: AdminClient): Promise<Map<string, string>> {
  return new Map((await client.groups.list.query({})).map((g) => [g.id, g.name]));
}

/** How many pages of 1,000 a name lookup reads at most (a million connectors). */
const MAX_NAME_LOOKUP_PAGES = 1000;

/**
 * CONNECTOR may be an id (`con_…`) or a name that exactly one connector has; a name two share is
 * refused with their ids, since acting on the wrong host cannot be undone (revoke, delete).
 */
async function resolveConnector(client: AdminClient, ref: string): Promise<string> {
  if (/^con_[A-Za-z0-9_-]+$/.test(ref)) return ref;
  const matches: string[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < MAX_NAME_LOOKUP_PAGES; page++) {
    const r: { items: Array<{ id: string; name: string }>; nextCursor: string | null } =
      await client.connectors.list.query({ limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const c of r.items) if (c.name === ref) matches.push(c.id);
    cursor = r.nextCursor;
    if (!cursor) break;
  }
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0)
    throw new CliError(
      `CONNECTOR_NOT_FOUND: no connector with id or name "${ref}"\n  fix: ${ERROR_REASONS.CONNECTOR_NOT_FOUND.hint}`,
      1,
      'CONNECTOR_NOT_FOUND',
    );
  throw new CliError(
    `${matches.length} connectors are named "${ref}": give the id of the one you mean (${matches.join(', ')})`,
    2,
  );
}

type GroupLike = Awaited<ReturnType<AdminClient['groups']['get']['query']>>;
const printGroup = (g: GroupLike) =>
  printFields([
    ['id', g.id],
    ['name', g.name],
    ['description', g.description || '-'],
    ['status', g.status],
    ['created', g.createdAt],
    ['connectors', `${g.counts.total} (${g.counts.connected} connected, ${g.counts.revoked} revoked)`],
  ]);

type KeyLike = Awaited<ReturnType<AdminClient['provisioningKeys']['get']['query']>>;

/** A group reference as the user would type it again in a shell. */
const shellWord = (ref: string) => (/^[\w.@-]+$/.test(ref) ? ref : `'${ref.replaceAll("'", "'\\''")}'`);

/**
 * The key alone on stdout (so `$(… groups key G)` captures it); the rest on stderr. A key that can
 * no longer enroll prints nothing on stdout and fails with one line, so `groups key G > file` never
 * leaves an empty file behind a zero exit.
 */
function printKey(options: AdminOptions, k: KeyLike, ref: string) {
  const fix = `run \`groups regenerate-key ${shellWord(ref)}\` for a new one`;
  const refusal: [string, string] | null =
    k.status === 'expired'
      ? ['KEY_EXPIRED', `the group's provisioning key expired at ${k.expiresAt}; ${fix}`]
      : k.status === 'exhausted'
        ? [
            'KEY_EXHAUSTED',
            `the group's provisioning key has made all ${k.maxUses} enrollments it allows; ${fix}`,
          ]
        : k.key === null
          ? [
              'SCOPE_FORBIDDEN',
              `this admin key has the read scope: it sees the provisioning key's details (${k.keyMasked ?? 'masked'}), not the key; use an admin-scoped key to read it`,
            ]
          : null;
  const uses = k.maxUses === null ? `${k.uses} (no limit)` : `${k.uses} of ${k.maxUses}`;
  print(options, k, () => {
    if (refusal) return;
    printFields(
      [
        ['name', k.name],
        ['key id', k.keyId],
        [
          'status',
          k.groupStatus === 'disabled'
            ? `${k.status}, but the group is disabled: it enrolls nobody until \`groups enable ${shellWord(ref)}\``
            : k.status,
        ],
        ['created', k.createdAt],
        ['expires', `${k.expiresAt} (${relative(k.expiresAt)})`],
        ['uses', uses],
        ['enrollments', k.enrollments],
      ],
      console.error,
    );
    if (k.key) console.log(k.key);
  });
  if (refusal) throw new CliError(`${refusal[0]}: ${refusal[1]}`, 1, refusal[0]);
}

/** `--max-uses` and `--ttl` of `groups regenerate-key`, checked before any call (usage errors exit 2). */
const keyPolicyFlags = adminOptions.extend({ maxUses: z.string().optional(), ttl: z.string().optional() });
const groupCreateOptions = keyPolicyFlags.extend({ description: z.string().optional() });
const forceOptions = adminOptions.extend({ force: z.boolean().optional() });
const connectorListOptions = adminOptions.extend({
  group: z.string().optional(),
  status: connectorStatusSchema.optional(),
  connection: connectionStateSchema.optional(),
  limit: z.string(),
  cursor: z.string().optional(),
});
const apiKeyCreateOptions = adminOptions.extend({
  scope: z.enum(['read', 'admin']),
  expiresIn: z.string().optional(),
});
const auditOptions = adminOptions.extend({
  since: z.string().optional(),
  before: z.string().optional(),
  limit: z.string(),
  type: z.string().optional(),
});

function keyPolicyOptions(o: { maxUses?: string | undefined; ttl?: string | undefined }): {
  maxUses?: number;
  ttl?: string;
} {
  const policy: { maxUses?: number; ttl?: string } = {};
  if (o.maxUses !== undefined) {
    const n = Number(o.maxUses);
    if (!/^\d+$/.test(o.maxUses.trim()) || n < 1 || n > MAX_KEY_USES)
      throw new CliError(
        `--max-uses must be a whole number from 1 to ${MAX_KEY_USES}, not "${o.maxUses}"`,
        2,
      );
    policy.maxUses = n;
  }
  if (o.ttl !== undefined) {
    const parsed = keyTtlSchema.safeParse(o.ttl);
    if (!parsed.success) throw new CliError(`--ttl ${parsed.error.issues[0]?.message ?? 'is not valid'}`, 2);
    policy.ttl = o.ttl;
  }
  return policy;
}

export function registerAdminCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  const groups = program.command('groups').description('manage connector groups and their provisioning keys');
  admin
    .command(groups, 'create <name>', 'create a group (its provisioning key is made with it)')
    .option('--description <text>', 'a description')
    .option('--max-uses <n>', 'its first key enrolls at most this many connectors (default: no limit)')
    .option('--ttl <duration>', "its first key's lifetime, 1s to 365d (default: the server's --key-ttl)")
    .action(
      admin.withClient(groupCreateOptions, async (client, options, name) => {
        const g = await client.groups.create.mutate({
          name: name!,
          ...(options.description ? { description: options.description } : {}),
          ...keyPolicyOptions(options),
        });
        print(options, g, () => {
          printGroup(g);
          console.log(
            `\nNext: copy its key with \`npm run -s server -- groups key "${g.name}"\` and run an agent with it.`,
          );
        });
      }),
    );
  admin.command(groups, 'list', 'list groups with connector counts').action(
    admin.withClient(adminOptions, async (client, options) => {
      const list = await client.groups.list.query({});
      print(options, list, () =>
        printTable(
          ['ID', 'NAME', 'STATUS', 'CONNECTORS', 'CONNECTED', 'CREATED'],
          list.map((g) => [g.id, g.name, g.status, g.counts.total, g.counts.connected, g.createdAt]),
          'No groups yet: create one with `groups create NAME`.',
        ),
      );
    }),
  );
  admin.command(groups, 'get <group>', 'show one group').action(
    admin.withClient(adminOptions, async (client, options, ref) => {
      const g = await client.groups.get.query({ groupId: await resolveGroup(client, ref!) });
      print(options, g, () => printGroup(g));
    }),
  );
  admin.command(groups, 'rename <group> <name>', 'rename a group').action(
    admin.withClient(adminOptions, async (client, options, ref, name) => {
      const g = await client.groups.update.mutate({ groupId: await resolveGroup(client, ref!), name: name! });
      print(options, g, () => printGroup(g));
    }),
  );
  for (const verb of ['disable', 'enable'] as const) {
    admin.command(groups, `${verb} <group>`, `${verb} a group (pushed live to its connectors)`).action(
      admin.withClient(adminOptions, async (client, options, ref) => {
        const g = await client.groups[verb].mutate({ groupId: await resolveGroup(client, ref!) });
        print(options, g, () => {
          if (!g.changed) console.error(`Group ${g.name} was already ${g.status}; nothing changed.`);
          printGroup(g);
        });
      }),
    );
  }
  admin
    .command(groups, 'delete <group>', 'delete a group')
    .option('--force', 'also end the sessions of its connectors and delete them')
    .action(
      admin.withClient(forceOptions, async (client, options, ref) => {
        const force = Boolean(options.force);
        const r = await client.groups.delete.mutate({ groupId: await resolveGroup(client, ref!), force });
        print(options, r, () => console.log('Group deleted.'));
      }),
    );
  admin
    .command(
      groups,
      'key <group>',
      "show the group's current provisioning key (the key alone on stdout; fails if it can no longer enroll)",
    )
    .action(
      admin.withClient(adminOptions, async (client, options, ref) => {
        printKey(
          options,
          await client.provisioningKeys.get.query({ groupId: await resolveGroup(client, ref!) }),
          ref!,
        );
      }),
    );
  admin
    .command(groups, 'regenerate-key <group>', 'replace the key: the old one stops working at once')
    .option('--max-uses <n>', 'the new key enrolls at most this many connectors (default: no limit)')
    .option('--ttl <duration>', "the new key's lifetime, 1s to 365d (default: the server's --key-ttl)")
    .action(
      admin.withClient(keyPolicyFlags, async (client, options, ref) => {
        const policy = keyPolicyOptions(options);
        const groupId = await resolveGroup(client, ref!);
        printKey(options, await client.provisioningKeys.regenerate.mutate({ groupId, ...policy }), ref!);
      }),
    );
  admin.command(groups, 'next-steps', 'groups that have no connectors yet').action(
    admin.withClient(adminOptions, async (client, options) => {
      const steps = await client.groups.nextSteps.query({});
      print(options, steps, () =>
        printTable(
          ['GROUP', 'NEXT STEP', 'HOW'],
          steps.map((s) => [s.name, s.step, s.hint]),
          'Every group has connectors.',
        ),
      );
    }),
  );

  const connectors = program.command('connectors').description('manage enrolled connectors');
  admin
    .command(connectors, 'list', 'list connectors')
    .option('--group <group>', 'only this group (id or name)')
    .addOption(
      new Option('--status <status>', 'only connectors with this status').choices(CONNECTOR_STATUSES),
    )
    .addOption(new Option('--connection <state>', 'only connectors in this state').choices(CONNECTION_STATES))
    .option('--limit <n>', 'page size', '100')
    .option('--cursor <cursor>', 'continue after this cursor')
    .action(
      admin.withClient(connectorListOptions, async (client, options) => {
        const o = options;
        const page = await client.connectors.list.query({
          ...(o.group ? { groupId: await resolveGroup(client, o.group) } : {}),
          ...(o.status ? { status: o.status } : {}),
          ...(o.connection ? { connection: o.connection } : {}),
          ...(o.cursor ? { cursor: o.cursor } : {}),
          limit: integerFlag('--limit', o.limit, 1, 1000),
        });
        // Names read better than ids in a table; one call for the whole page.
        const groupNames = options.json ? new Map<string, string>() : await groupNamesOf(client);
        print(options, page, () => {
          printTable(
            ['ID', 'NAME', 'GROUP', 'STATUS', 'CONNECTION', 'LAST SEEN', 'ADDRESS', 'VERSION', 'REPLACED'],
            page.items.map((c) => [
              c.id,
              c.name,
              groupNames.get(c.groupId) ?? c.groupId,
              // A revoked one says whether its host has learnt it yet.
              c.termination ? `revoked (${c.termination.state})` : c.status,
              c.connection,
              // A connected one is seen now; its lastSeenAt is the time of the answer.
              c.connection === 'connected' ? 'now' : relative(c.lastSeenAt),
              c.remoteAddress,
              c.agentVersion,
              // A clone's mark: when a session with this identity last replaced another.
              relative(c.lastReplacedAt),
            ]),
            'No connectors.',
          );
          if (page.nextCursor) console.log(`More: --cursor ${page.nextCursor}`);
        });
      }),
    );
  admin
    .command(
      connectors,
      'get <connector>',
      'show one connector with its host facts (id, or a name only one has)',
    )
    .action(
      admin.withClient(adminOptions, async (client, options, id) => {
        const c = await client.connectors.get.query({ connectorId: await resolveConnector(client, id!) });
        const groupName = options.json ? undefined : (await groupNamesOf(client)).get(c.groupId);
        print(options, c, () =>
          printFields([
            ['id', c.id],
            ['name', c.name],
            ['group', groupName ? `${groupName} (${c.groupId})` : c.groupId],
            ['status', terminationWords(c.termination) ?? c.status],
            ['connection', c.connection],
            ['enrolled', c.enrolledAt],
            ['last connected', c.lastConnectedAt],
            ['last seen', c.lastSeenAt],
            ['address', c.remoteAddress],
            ['replaced', replacementWords(c)],
            ['agent version', c.agentVersion],
            [
              'host',
              `${c.host.hostname} (${c.host.os} ${c.host.release}, ${c.host.arch}, ${c.host.cpus} CPUs)`,
            ],
            ['ips', c.host.ips.join(', ')],
            ['identity expires', c.identity.expiresAt],
          ]),
        );
      }),
    );
  for (const verb of ['disable', 'enable'] as const) {
    admin
      .command(
        connectors,
        `${verb} <connector>`,
        `${verb} a connector (pushed live; id, or a name only one has)`,
      )
      .action(
        admin.withClient(adminOptions, async (client, options, id) => {
          const c = await client.connectors[verb].mutate({
            connectorId: await resolveConnector(client, id!),
          });
          print(options, c, () =>
            console.log(
              c.changed
                ? `Connector ${c.id} is ${c.status}.`
                : `Connector ${c.id} was already ${c.status}; nothing changed.`,
            ),
          );
        }),
      );
  }
  admin
    .command(
      connectors,
      'revoke <connector>',
      "revoke for good: ends its session and regenerates its group's key",
    )
    .option('--reason <text>', 'why, for the audit log')
    .action(
      admin.withClient(
        adminOptions.extend({ reason: z.string().optional() }),
        async (client, options, id) => {
          const reason = options.reason;
          const c = await client.connectors.revoke.mutate({
            connectorId: await resolveConnector(client, id!),
            ...(reason ? { reason } : {}),
          });
          print(options, c, () =>
            console.log(
              c.changed
                ? `Connector ${c.id} ${terminationWords(c.termination)}.\nIts group's provisioning key was regenerated.`
                : `Connector ${c.id} was already revoked at ${c.revokedAt}; nothing changed (no new key).`,
            ),
          );
        },
      ),
    );
  admin.command(connectors, 'delete <connector>', 'delete a connector (ends its session)').action(
    admin.withClient(adminOptions, async (client, options, id) => {
      const r = await client.connectors.delete.mutate({ connectorId: await resolveConnector(client, id!) });
      print(options, r, () => console.log(`Connector ${terminationWords(r.termination, 'deleted')}.`));
    }),
  );

  const apiKeys = program
    .command('api-keys')
    .description('manage admin API keys (provisioning keys are listed too)');
  admin.command(apiKeys, 'list', 'list API keys').action(
    admin.withClient(adminOptions, async (client, options) => {
      const list = await client.apiKeys.list.query({});
      print(options, list, () =>
        printTable(
          ['ID', 'NAME', 'KIND', 'SCOPE', 'STATUS', 'USES', 'CREATED', 'EXPIRES', 'LAST USED'],
          list.map((k) => [
            k.id,
            k.name,
            k.kind,
            k.scope,
            k.status,
            k.uses === null ? null : k.maxUses === null ? k.uses : `${k.uses}/${k.maxUses}`,
            k.createdAt,
            k.expiresAt ?? 'never',
            k.lastUsedAt,
          ]),
        ),
      );
    }),
  );
  admin
    .command(apiKeys, 'create <name>', 'create an admin API key (shown once)')
    .addOption(
      new Option('--scope <scope>', 'what the key may do').choices(['read', 'admin']).default('admin'),
    )
    .option('--expires-in <duration>', 'e.g. 30d')
    .action(
      admin.withClient(apiKeyCreateOptions, async (client, options, name) => {
        const o = options;
        const days = o.expiresIn
          ? Math.max(1, Math.ceil(durationFlag('--expires-in', o.expiresIn) / 86_400_000))
          : undefined;
        const k = await client.apiKeys.create.mutate({
          name: name!,
          scope: o.scope,
          ...(days ? { expiresInDays: days } : {}),
        });
        print(options, k, () => {
          printFields(
            [
              ['id', k.id],
              ['name', k.name],
              ['scope', k.scope],
              ['expires', k.expiresAt ?? 'never'],
            ],
            console.error,
          );
          console.error('The key is shown this once; store it now:');
          console.log(k.key);
        });
      }),
    );
  admin
    .command(apiKeys, 'delete <id>', 'delete an admin API key')
    .option('--force', 'also the key making the call, or the last usable admin-scoped key')
    .action(
      admin.withClient(forceOptions, async (client, options, id) => {
        const force = Boolean(options.force);
        const r = await client.apiKeys.delete.mutate({ id: id!, ...(force ? { force } : {}) });
        print(options, r, () => console.log('API key deleted.'));
      }),
    );

  admin
    .command(program, 'audit', 'show the audit log, newest first')
    .option('--since <iso>', 'only events at or after this time (older files are not read)')
    .option('--before <event-id>', 'the next page: events logged before this one (the last id shown)')
    .option('--limit <n>', 'at most this many', '50')
    .option('--type <type>', 'only this event type (or prefix, e.g. enrollment)')
    .action(
      admin.withClient(auditOptions, async (client, options) => {
        const o = options;
        const events = await client.audit.list.query({
          limit: Number(o.limit),
          ...(o.since ? { since: o.since } : {}),
          ...(o.before ? { before: o.before } : {}),
          ...(o.type ? { type: o.type } : {}),
        });
        print(options, events, () => {
          printTable(
            ['TIME', 'TYPE', 'OUTCOME', 'REASON', 'FROM', 'GROUP', 'CONNECTOR', 'KEY', 'SECURITY'],
            events.map((e) => [
              e.at,
              e.type,
              e.outcome,
              e.reason,
              e.remoteAddress,
              e.groupId,
              e.connectorId,
              e.keyId,
              e.security ? 'YES' : '',
            ]),
            'No events.',
          );
          const last = events.at(-1);
          if (last && events.length === Number(o.limit)) console.log(`Older: audit --before ${last.id}`);
        });
      }),
    );
}
