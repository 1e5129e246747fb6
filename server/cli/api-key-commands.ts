import type { Command } from 'commander';
import { z } from 'zod';
import { DAY_MS, parseDuration } from '../../shared/durations.js';
import { parsedFlag } from '../flag-values.js';
import { type AdminEnv, adminCli, print } from './admin-common.js';
import { flag, forceFlag } from './flags.js';
import { printFields, printTable } from './format.js';

const SCOPES = ['read', 'admin'] as const;

/**
 * An API key's lifetime: the API takes whole days. Rounded up, as it was, `--expires-in 2s` made a
 * key that lived a day, said only by the expiry printed after it was made.
 */
const wholeDays = parsedFlag((text) => {
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch {
    // The generic hint's examples (90s, 15m) are what this flag then refuses in turn.
    throw new Error(
      `"${text}" is not a duration: API keys last whole days, 1d to 3650d (e.g. 1d, 30d, 720h)`,
    );
  }
  if (ms % DAY_MS !== 0 || ms < DAY_MS || ms > 3650 * DAY_MS)
    throw new Error(`API keys last whole days, 1d to 3650d: ${text} is not (e.g. 1d, 30d, 720h)`);
  return ms;
});

/** `api-keys list | create | delete`. */
export function registerApiKeyCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  const apiKeys = program
    .command('api-keys')
    .description('manage admin API keys (provisioning keys are listed too)');
  admin.command(apiKeys, 'list', 'list API keys', async (client, options) => {
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
  });
  const createFlags = {
    scope: flag('--scope <scope>', 'what the key may do', z.enum(SCOPES), {
      choices: SCOPES,
      default: 'admin',
    }),
    expiresIn: flag(
      '--expires-in <duration>',
      'whole days, 1d to 3650d (e.g. 30d); default never',
      wholeDays.optional(),
    ),
  };
  admin.command(
    apiKeys,
    'create <name>',
    'create an admin API key (shown once)',
    createFlags,
    async (client, options, name) => {
      const days = options.expiresIn ? options.expiresIn / DAY_MS : undefined;
      const k = await client.apiKeys.create.mutate({
        name: name!,
        scope: options.scope,
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
    },
  );
  admin.command(
    apiKeys,
    'delete <id>',
    'delete an admin API key',
    forceFlag('also the key making the call, or the last usable admin-scoped key'),
    async (client, options, id) => {
      const { force } = options;
      const r = await client.apiKeys.delete.mutate({ id: id!, ...(force ? { force } : {}) });
      print(options, r, () => console.log(`API key ${id} deleted.`));
    },
  );
}
