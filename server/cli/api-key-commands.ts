import { type Command, Option } from 'commander';
import { z } from 'zod';
import { DAY_MS } from '../../shared/durations.js';
import { type AdminEnv, adminCli, adminOptions, durationFlag, forceOptions, print } from './admin-common.js';
import { printFields, printTable } from './format.js';

const apiKeyCreateOptions = adminOptions.extend({
  scope: z.enum(['read', 'admin']),
  expiresIn: z.string().optional(),
});

/** `api-keys list | create | delete`. */
export function registerApiKeyCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
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
        const days = options.expiresIn
          ? Math.max(1, Math.ceil(durationFlag('--expires-in', options.expiresIn) / DAY_MS))
          : undefined;
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
}
