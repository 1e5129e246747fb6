import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ERROR_REASONS } from '../../shared/errors.js';
import { type AdminClient, createAdminClient, reasonOf, TRPCClientError } from '../admin-client.js';
import { parseDuration } from '../config.js';
import { printFields, printTable, relative, replacementWords, terminationWords } from './format.js';

export interface AdminOptions {
  server: string;
  adminKeyFile?: string;
  dataDir: string;
  json?: boolean;
}

/** A failure the CLI explains and exits on; `exitCode` 2 is a usage error. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function resolveAdminKey(options: AdminOptions): string {
  const fromEnv = process.env.CONNECTOR_ADMIN_KEY?.trim();
  if (fromEnv) return fromEnv;
  const file = options.adminKeyFile ?? join(options.dataDir, 'admin.key');
  if (!existsSync(file)) {
    throw new CliError(
      `no admin API key: set CONNECTOR_ADMIN_KEY, pass --admin-key-file, or run from the folder whose ${join(options.dataDir, 'admin.key')} the server wrote`,
      2,
    );
  }
  return readFileSync(file, 'utf8').trim();
}

/** Explains a failed API call: the reason, what it means and how to fix it. */
export function explain(error: unknown, server: string): CliError {
  const reason = reasonOf(error);
  if (reason) {
    const message = error instanceof Error ? error.message : ERROR_REASONS[reason].message;
    return new CliError(`${reason}: ${message}\n  fix: ${ERROR_REASONS[reason].hint}`);
  }
  if (error instanceof TRPCClientError) {
    return new CliError(
      `cannot reach the server at ${server} (${error.message}): is it running? (npm start)`,
    );
  }
  return error instanceof CliError ? error : new CliError(String((error as Error)?.message ?? error));
}

type Action = (client: AdminClient, options: AdminOptions, ...args: string[]) => Promise<void>;

/** A subcommand with the options every admin command takes (--server, --admin-key-file, --data-dir, --json). */
export function adminCommand(parent: Command, usage: string, description: string): Command {
  return parent
    .command(usage)
    .description(description)
    .option(
      '--server <url>',
      'server URL (env CONNECTOR_SERVER)',
      process.env.CONNECTOR_SERVER ?? 'http://127.0.0.1:7420',
    )
    .option(
      '--admin-key-file <file>',
      'file holding an admin API key (default: CONNECTOR_ADMIN_KEY, then <data-dir>/admin.key)',
    )
    .option(
      '--data-dir <dir>',
      'the server data dir, to find admin.key',
      process.env.CONNECTOR_DATA_DIR ?? './data',
    )
    .option('--json', 'print JSON instead of a table');
}

/** Runs `action` with an admin client, explaining any API failure. */
export function withClient(action: Action) {
  return async (...args: unknown[]) => {
    const command = args[args.length - 1] as Command;
    const options = command.opts() as AdminOptions;
    const positional = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
    const client = createAdminClient({ url: options.server, adminKey: resolveAdminKey(options) });
    try {
      await action(client, options, ...positional);
    } catch (error) {
      throw explain(error, options.server);
    }
  };
}

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
    );
  return found.id;
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
/** The key alone on stdout (so `$(… groups key G)` captures it); the rest on stderr. */
function printKey(options: AdminOptions, k: KeyLike) {
  print(options, k, () => {
    printFields(
      [
        ['name', k.name],
        ['key id', k.keyId],
        ['status', k.status],
        ['created', k.createdAt],
        ['expires', `${k.expiresAt} (${relative(k.expiresAt)})`],
        ['enrollments', k.enrollments],
      ],
      console.error,
    );
    if (k.key) console.log(k.key);
    else console.error('The key has expired: run `groups regenerate-key GROUP` for a new one.');
  });
}

export function registerAdminCommands(program: Command): void {
  const groups = program.command('groups').description('manage connector groups and their provisioning keys');
  adminCommand(groups, 'create <name>', 'create a group (its provisioning key is made with it)')
    .option('--description <text>', 'a description')
    .action(
      withClient(async (client, options, name) => {
        const g = await client.groups.create.mutate({
          name: name!,
          ...((options as AdminOptions & { description?: string }).description
            ? { description: (options as AdminOptions & { description?: string }).description }
            : {}),
        });
        print(options, g, () => {
          printGroup(g);
          console.log(
            `\nNext: copy its key with \`npm run -s server -- groups key "${g.name}"\` and run an agent with it.`,
          );
        });
      }),
    );
  adminCommand(groups, 'list', 'list groups with connector counts').action(
    withClient(async (client, options) => {
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
  adminCommand(groups, 'get <group>', 'show one group').action(
    withClient(async (client, options, ref) => {
      const g = await client.groups.get.query({ groupId: await resolveGroup(client, ref!) });
      print(options, g, () => printGroup(g));
    }),
  );
  adminCommand(groups, 'rename <group> <name>', 'rename a group').action(
    withClient(async (client, options, ref, name) => {
      const g = await client.groups.update.mutate({ groupId: await resolveGroup(client, ref!), name: name! });
      print(options, g, () => printGroup(g));
    }),
  );
  for (const verb of ['disable', 'enable'] as const) {
    adminCommand(groups, `${verb} <group>`, `${verb} a group (pushed live to its connectors)`).action(
      withClient(async (client, options, ref) => {
        const g = await client.groups[verb].mutate({ groupId: await resolveGroup(client, ref!) });
        print(options, g, () => printGroup(g));
      }),
    );
  }
  adminCommand(groups, 'delete <group>', 'delete a group')
    .option('--force', 'also end the sessions of its connectors and delete them')
    .action(
      withClient(async (client, options, ref) => {
        const force = Boolean((options as AdminOptions & { force?: boolean }).force);
        const r = await client.groups.delete.mutate({ groupId: await resolveGroup(client, ref!), force });
        print(options, r, () => console.log('Group deleted.'));
      }),
    );
  adminCommand(
    groups,
    'key <group>',
    "show the group's current provisioning key (the key alone on stdout)",
  ).action(
    withClient(async (client, options, ref) => {
      printKey(
        options,
        await client.provisioningKeys.get.query({ groupId: await resolveGroup(client, ref!) }),
      );
    }),
  );
  adminCommand(groups, 'regenerate-key <group>', 'replace the key: the old one stops working at once').action(
    withClient(async (client, options, ref) => {
      printKey(
        options,
        await client.provisioningKeys.regenerate.mutate({ groupId: await resolveGroup(client, ref!) }),
      );
    }),
  );
  adminCommand(groups, 'next-steps', 'groups that have no connectors yet').action(
    withClient(async (client, options) => {
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
  adminCommand(connectors, 'list', 'list connectors')
    .option('--group <group>', 'only this group (id or name)')
    .option('--status <status>', 'enabled, disabled or revoked')
    .option('--connection <state>', 'connected, disconnected or never')
    .option('--limit <n>', 'page size', '100')
    .option('--cursor <cursor>', 'continue after this cursor')
    .action(
      withClient(async (client, options) => {
        const o = options as AdminOptions & {
          group?: string;
          status?: string;
          connection?: string;
          limit: string;
          cursor?: string;
        };
        const page = await client.connectors.list.query({
          ...(o.group ? { groupId: await resolveGroup(client, o.group) } : {}),
          ...(o.status ? { status: o.status as 'enabled' } : {}),
          ...(o.connection ? { connection: o.connection as 'connected' } : {}),
          ...(o.cursor ? { cursor: o.cursor } : {}),
          limit: Number(o.limit),
        });
        print(options, page, () => {
          printTable(
            ['ID', 'NAME', 'GROUP', 'STATUS', 'CONNECTION', 'LAST SEEN', 'ADDRESS', 'VERSION', 'REPLACED'],
            page.items.map((c) => [
              c.id,
              c.name,
              c.groupId,
              // A revoked one says whether its host has learnt it yet.
              c.termination ? `revoked (${c.termination.state})` : c.status,
              c.connection,
              relative(c.lastSeenAt),
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
  adminCommand(connectors, 'get <id>', 'show one connector with its host facts').action(
    withClient(async (client, options, id) => {
      const c = await client.connectors.get.query({ connectorId: id! });
      print(options, c, () =>
        printFields([
          ['id', c.id],
          ['name', c.name],
          ['group', c.groupId],
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
    adminCommand(connectors, `${verb} <id>`, `${verb} a connector (pushed live)`).action(
      withClient(async (client, options, id) => {
        const c = await client.connectors[verb].mutate({ connectorId: id! });
        print(options, c, () => console.log(`Connector ${c.id} is ${c.status}.`));
      }),
    );
  }
  adminCommand(connectors, 'revoke <id>', "revoke for good: ends its session and regenerates its group's key")
    .option('--reason <text>', 'why, for the audit log')
    .action(
      withClient(async (client, options, id) => {
        const reason = (options as AdminOptions & { reason?: string }).reason;
        const c = await client.connectors.revoke.mutate({ connectorId: id!, ...(reason ? { reason } : {}) });
        print(options, c, () =>
          console.log(
            `Connector ${c.id} ${terminationWords(c.termination)}.\nIts group's provisioning key was regenerated.`,
          ),
        );
      }),
    );
  adminCommand(connectors, 'delete <id>', 'delete a connector (ends its session)').action(
    withClient(async (client, options, id) => {
      const r = await client.connectors.delete.mutate({ connectorId: id! });
      print(options, r, () => console.log(`Connector ${terminationWords(r.termination, 'deleted')}.`));
    }),
  );

  const apiKeys = program
    .command('api-keys')
    .description('manage admin API keys (provisioning keys are listed too)');
  adminCommand(apiKeys, 'list', 'list API keys').action(
    withClient(async (client, options) => {
      const list = await client.apiKeys.list.query({});
      print(options, list, () =>
        printTable(
          ['ID', 'NAME', 'KIND', 'SCOPE', 'CREATED', 'EXPIRES', 'LAST USED'],
          list.map((k) => [k.id, k.name, k.kind, k.scope, k.createdAt, k.expiresAt ?? 'never', k.lastUsedAt]),
        ),
      );
    }),
  );
  adminCommand(apiKeys, 'create <name>', 'create an admin API key (shown once)')
    .option('--scope <scope>', 'read or admin', 'admin')
    .option('--expires-in <duration>', 'e.g. 30d')
    .action(
      withClient(async (client, options, name) => {
        const o = options as AdminOptions & { scope: string; expiresIn?: string };
        if (o.scope !== 'read' && o.scope !== 'admin') throw new CliError('--scope must be read or admin', 2);
        const days = o.expiresIn
          ? Math.max(1, Math.ceil(parseDuration(o.expiresIn) / 86_400_000))
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
  adminCommand(apiKeys, 'delete <id>', 'delete an admin API key').action(
    withClient(async (client, options, id) => {
      const r = await client.apiKeys.delete.mutate({ id: id! });
      print(options, r, () => console.log('API key deleted.'));
    }),
  );

  adminCommand(program, 'audit', 'show the audit log, newest first')
    .option('--since <iso>', 'only events at or after this time')
    .option('--limit <n>', 'at most this many', '50')
    .option('--type <type>', 'only this event type (or prefix, e.g. enrollment)')
    .action(
      withClient(async (client, options) => {
        const o = options as AdminOptions & { since?: string; limit: string; type?: string };
        const events = await client.audit.list.query({
          limit: Number(o.limit),
          ...(o.since ? { since: o.since } : {}),
          ...(o.type ? { type: o.type } : {}),
        });
        print(options, events, () =>
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
          ),
        );
      }),
    );
}
