/** What every admin command shares: its options, the environment's defaults, the client, errors and lookups. */

import { join } from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { ERROR_REASONS, type ErrorReason } from '../../shared/errors.js';
import { didYouMean, nearest } from '../../shared/nearest.js';
import { tlsPortAsPlainHttp } from '../../shared/tls-probe.js';
import { type AdminClient, createAdminClient, reasonOf, TRPCClientError } from '../admin-client.js';
import { SERVE_FLAGS } from '../config.js';
import { shellWord } from '../shell-words.js';
import { resolveAdminKey } from './admin-key.js';
import { CliError } from './cli-error.js';
import {
  ADMIN_CALL_TIMEOUT_S,
  adminFetch,
  boundedCalls,
  type CallKind,
  ConnectionProblem,
  causeOf,
  explainUnreachable,
  firstAnswering,
  isTlsMisconfiguration,
  NotTheApi,
  noticingNotReady,
  refusingForeignAnswers,
  type UnreachableContext,
} from './connection.js';
import { addFlags, type Flags, flagShape, wholeNumber } from './flags.js';

/** The longest `--timeout` an admin command takes, in seconds. */
export const MAX_ADMIN_TIMEOUT_S = 3600;

/** The options every admin command takes; a command's own options extend this schema. */
export const adminOptions = z.object({
  server: z.string(),
  adminKeyFile: z.string().optional(),
  caFile: z.string().optional(),
  dataDir: z.string(),
  json: z.boolean().optional(),
  /** Seconds to wait for the server's answer to each call. */
  timeout: wholeNumber(1, MAX_ADMIN_TIMEOUT_S),
});
export type AdminOptions = z.infer<typeof adminOptions>;

/**
 * The flags that send another admin command where this one went (the server, the key), for a hint
 * to copy: empty when this one used the defaults.
 */
export function connectionFlags(options: AdminOptions, env: AdminEnv): string {
  const flags: string[] = [];
  if (options.server !== env.server) flags.push(`--server ${shellWord(options.server)}`);
  if (options.adminKeyFile) flags.push(`--admin-key-file ${shellWord(options.adminKeyFile)}`);
  else if (options.dataDir !== env.dataDir) flags.push(`--data-dir ${shellWord(options.dataDir)}`);
  if (options.caFile && options.caFile !== env.caFile) flags.push(`--ca-file ${shellWord(options.caFile)}`);
  if (options.timeout !== undefined && options.timeout !== ADMIN_CALL_TIMEOUT_S)
    flags.push(`--timeout ${options.timeout}`);
  return flags.map((flag) => ` ${flag}`).join('');
}

/** What the admin commands take from the environment: the defaults their flags override. */
export interface AdminEnv {
  server: string;
  /** Whether `server` is CONNECTOR_SERVER's (else the default address). */
  serverFromEnv: boolean;
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
    serverFromEnv: env.CONNECTOR_SERVER !== undefined,
    dataDir: env[SERVE_FLAGS.dataDir.env] ?? SERVE_FLAGS.dataDir.default,
    caFile: env.CONNECTOR_CA_FILE,
    adminKey: env.CONNECTOR_ADMIN_KEY?.trim() || undefined,
  };
}

/** Reasons that mean the command sent input the server could not take: the user's to fix, as a usage error. */
const USAGE_REASONS = new Set(['VALIDATION_FAILED', 'BAD_REQUEST']);

/**
 * Where the admin key a refused call sent came from, with its public id: after `api-keys delete` of
 * the bootstrap key, `./data/admin.key` still holds it, and "a valid key is required" alone does
 * not say which key was not.
 */
export function adminKeySource(
  options: Pick<AdminOptions, 'adminKeyFile' | 'dataDir'>,
  fromEnv: string | undefined,
  key: string,
): string {
  const id = /^cak_([a-z0-9]+)_/.exec(key)?.[1];
  const where = options.adminKeyFile
    ? `--admin-key-file ${options.adminKeyFile}`
    : fromEnv
      ? 'CONNECTOR_ADMIN_KEY'
      : join(options.dataDir, 'admin.key');
  return `the key sent came from ${where}${id ? ` (id ak_${id})` : ''}: if it was deleted or expired (api-keys list), put a current admin key there`;
}

/**
 * The fix a CLI user is told where the API's hint speaks of HTTP ("See error.data.issues", "Pass
 * `Authorization: Bearer …`"): the message above it already names the field at fault.
 */
const CLI_HINTS: Partial<Record<ErrorReason, string>> = {
  VALIDATION_FAILED: "give the value named above as the command's --help says",
  ADMIN_KEY_INVALID: 'use a current admin key: --admin-key-file FILE or CONNECTOR_ADMIN_KEY',
  RATE_LIMITED: 'wait the time named above, then try again',
};

/** Explains a failed API call: the reason, what it means and how to fix it. */
export function explain(error: unknown, server: string, context: UnreachableContext = {}): CliError {
  const reason = reasonOf(error);
  if (reason) {
    const message = error instanceof Error ? error.message : ERROR_REASONS[reason].message;
    return new CliError(
      `${reason}: ${message}\n  fix: ${CLI_HINTS[reason] ?? ERROR_REASONS[reason].hint}`,
      USAGE_REASONS.has(reason) ? 2 : 1,
      reason,
    );
  }
  if (error instanceof TRPCClientError) {
    const line = explainUnreachable(error, server, context);
    // A TLS misconfiguration (an untrusted or misnamed certificate, https:// to a plain port) is
    // fixed by a flag, as http:// to a TLS port is: exit 2, as the agent says it too.
    return new CliError(line, isTlsMisconfiguration(error) ? 2 : 1);
  }
  return error instanceof CliError ? error : new CliError(String((error as Error)?.message ?? error));
}

type Action<O> = (client: AdminClient, options: O, ...args: string[]) => Promise<void>;

/** A subcommand with the options every admin command takes (--server, --admin-key-file, --data-dir, --json). */
export function adminCommand(parent: Command, usage: string, description: string, env: AdminEnv): Command {
  return parent
    .command(usage)
    .description(description)
    .option(
      '--server <url>',
      'server URL, or several comma-separated (replicas: the first that answers) (env CONNECTOR_SERVER)',
      env.server,
    )
    .option(
      '--admin-key-file <file>',
      'file holding an admin API key (default: CONNECTOR_ADMIN_KEY, then <data-dir>/admin.key)',
    )
    .option(
      '--data-dir <dir>',
      'the server data dir, to find admin.key (env CONNECTOR_DATA_DIR)',
      env.dataDir,
    )
    .option(
      '--ca-file <file>',
      'PEM certificate of the CA that signed the server certificate, for https:// servers a private CA signed (env CONNECTOR_CA_FILE)',
      env.caFile,
    )
    .option('--json', 'print JSON instead of a table')
    .option(
      '--timeout <seconds>',
      `how long to wait for the server's answer to each call, 1 to ${MAX_ADMIN_TIMEOUT_S}`,
      String(ADMIN_CALL_TIMEOUT_S),
    );
}

/** `--max-uses` from `maxUses`: the flag a parsed option came from, for a usage error. */
const flagOf = (key: PropertyKey) => `--${String(key).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** A command's options as its schema types them, or a usage error naming the flag. */
export function parseOptions<O>(schema: z.ZodType<O>, values: unknown): O {
  const parsed = schema.safeParse(values);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new CliError(`${flagOf(issue?.path[0] ?? 'options')}: ${issue?.message ?? 'not valid'}`, 2);
}

/** A command's options: the ones every admin command takes, and its own flags as their schemas type them. */
export type OptionsOf<F extends Flags> = AdminOptions & { [K in keyof F]: z.output<F[K]['schema']> };

/** The admin commands' builder, bound to the environment's defaults (read once, in program.ts). */
export function adminCli(env: AdminEnv) {
  /** Runs `action` with an admin client and the options `schema` parses, explaining any API failure. */
  function withClient<O extends AdminOptions>(schema: z.ZodType<O>, action: Action<O>) {
    return async (...args: unknown[]) => {
      const command = args[args.length - 1] as Command;
      const options = parseOptions(schema, command.opts());
      const positional = args.slice(0, -2).filter((a): a is string => typeof a === 'string');
      const from = options.server === env.server && env.serverFromEnv ? 'CONNECTOR_SERVER' : '--server';
      let transport: typeof fetch | undefined;
      let server: string;
      try {
        server = await firstAnswering(options.server, options.caFile, from);
        transport = adminFetch(server, options.caFile, from);
      } catch (error) {
        if (error instanceof ConnectionProblem) throw new CliError(error.message, error.usage ? 2 : 1);
        throw error;
      }
      const adminKey = resolveAdminKey(options, env.adminKey);
      const call: CallKind = { change: false };
      const client = createAdminClient({
        url: server,
        adminKey,
        fetch: noticingNotReady(
          refusingForeignAnswers(boundedCalls(transport ?? fetch, options.timeout, call), server),
          server,
          (line) => console.error(line),
        ),
      });
      try {
        await action(client, options, ...positional);
      } catch (error) {
        const foreign = causeOf(error, NotTheApi);
        if (foreign) throw new CliError(foreign.message, foreign.usage ? 2 : 1);
        const tlsPort = error instanceof TRPCClientError ? await tlsPortAsPlainHttp(error, server) : null;
        if (tlsPort) throw new CliError(`cannot reach the server: ${tlsPort} (${from})`, 2);
        const explained = explain(error, server, {
          call,
          plainHttpChecked: true,
          caGiven: Boolean(options.caFile),
        });
        if (explained.reason !== 'ADMIN_KEY_INVALID') throw explained;
        throw new CliError(
          `${explained.message}\n  ${adminKeySource(options, env.adminKey, adminKey)}`,
          explained.exitCode,
          explained.reason,
        );
      }
    };
  }

  /**
   * `parent <usage>`: the options every admin command takes, then its own `flags`; `action` gets a
   * client, the parsed options (a flag its schema refuses is a usage error) and the operands.
   */
  function command(
    parent: Command,
    usage: string,
    description: string,
    action: Action<AdminOptions>,
  ): Command;
  function command<F extends Flags>(
    parent: Command,
    usage: string,
    description: string,
    flags: F,
    action: Action<OptionsOf<F>>,
  ): Command;
  function command(
    parent: Command,
    usage: string,
    description: string,
    flagsOrAction: Flags | Action<AdminOptions>,
    action?: Action<AdminOptions>,
  ): Command {
    const flags = typeof flagsOrAction === 'function' ? {} : flagsOrAction;
    const run = typeof flagsOrAction === 'function' ? flagsOrAction : action!;
    // The overloads type the options; here `flags` is of any shape, which zod's types cannot follow.
    const schema = adminOptions.extend(flagShape(flags)) as unknown as z.ZodType<AdminOptions>;
    return addFlags(adminCommand(parent, usage, description, env), flags).action(withClient(schema, run));
  }

  return { command };
}

/** JSON with --json, else what `human` prints. */
export const print = (options: AdminOptions, value: unknown, human: () => void) => {
  if (options.json) console.log(JSON.stringify(value, null, 2));
  else human();
};

/** GROUP may be an id (`grp_…`) or an exact name; a near miss is told what it may have meant. */
export async function resolveGroup(client: AdminClient, ref: string): Promise<string> {
  const groups = await client.groups.list.query({});
  const found = groups.find((g) => g.id === ref) ?? groups.find((g) => g.name === ref);
  if (!found)
    throw new CliError(
      `GROUP_NOT_FOUND: no group with id or name "${ref}";${
        didYouMean(
          nearest(
            ref,
            groups.map((g) => g.name),
          ),
        ) || ' names are exact, case included'
      }\n  fix: ${ERROR_REASONS.GROUP_NOT_FOUND.hint}`,
      1,
      'GROUP_NOT_FOUND',
    );
  return found.id;
}

/** Group names by id, for tables. */
export async function groupNamesOf(client: AdminClient): Promise<Map<string, string>> {
  return new Map((await client.groups.list.query({})).map((g) => [g.id, g.name]));
}

/** How many pages of 1,000 a name lookup reads at most (a million connectors). */
const MAX_NAME_LOOKUP_PAGES = 1000;

/**
 * CONNECTOR may be an id (`con_…`) or a name that exactly one connector has; a name two share is
 * refused with their ids, since acting on the wrong host cannot be undone (revoke, delete).
 */
export async function resolveConnector(client: AdminClient, ref: string): Promise<string> {
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
