import type { Command } from 'commander';
import { z } from 'zod';
import { keyTtlSchema, MAX_KEY_USES } from '../../shared/schemas.js';
import type { AdminClient } from '../admin-client.js';
import { deployHint, groupWord } from '../shell-words.js';
import {
  type AdminEnv,
  type AdminOptions,
  adminCli,
  connectionFlags,
  print,
  resolveGroup,
} from './admin-common.js';
import { CliError } from './cli-error.js';
import { flag, forceFlag, wholeNumber } from './flags.js';
import { printFields, printTable, relative } from './format.js';

type GroupLike = Awaited<ReturnType<AdminClient['groups']['get']['query']>>;
const printGroup = (g: GroupLike) =>
  printFields([
    ['id', g.id],
    ['name', g.name],
    ['description', g.description || '-'],
    ['status', g.status],
    ['created', g.createdAt],
    ['connectors', `${g.counts.total} (${g.counts.connected} connected, ${g.counts.revoked} revoked)`],
    ['key', keyWords(g)],
  ]);

/**
 * The current key in a few words: whether it can enroll, and until when. An expired or used-up key
 * is what an agent that cannot enroll points at, so the list says it without a `groups key` per group.
 */
function keyWords(group: Pick<GroupLike, 'currentKey' | 'status'>): string {
  const key = group.currentKey;
  if (!key) return '-';
  const uses = key.maxUses === null ? '' : `, ${key.uses}/${key.maxUses} used`;
  if (key.status === 'expired') return `expired ${relative(key.expiresAt)}: regenerate-key`;
  if (key.status === 'exhausted') return `used up${uses}: regenerate-key`;
  // A disabled group's key is current but refuses every host (GROUP_DISABLED) until it is enabled.
  const disabled = group.status === 'disabled' ? ' (enrolls no host: group disabled)' : '';
  return `expires ${relative(key.expiresAt)}${uses}${disabled}`;
}

type KeyLike = Awaited<ReturnType<AdminClient['provisioningKeys']['get']['query']>>;

/** A key's lifetime, creation to expiry, in the largest unit it has a whole one of (`14d`, `2s`). */
function lifetimeWords(k: KeyLike): string {
  const seconds = Math.max(1, Math.round((Date.parse(k.expiresAt) - Date.parse(k.createdAt)) / 1000));
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
  ] as const)
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  return `${seconds}s`;
}

/**
 * The key alone on stdout (so `$(… groups key G)` captures it); the rest on stderr. A key that can
 * no longer enroll prints nothing on stdout and fails with one line, so `groups key G > file` never
 * leaves an empty file behind a zero exit.
 */
function printKey(options: AdminOptions, k: KeyLike, ref: string) {
  // The new key keeps this one's policy (a 2-second key's successor lives 2 seconds too): say so,
  // with the flags that change it.
  const limit = k.maxUses === null ? '' : ` and its limit of ${k.maxUses} use${k.maxUses === 1 ? '' : 's'}`;
  const fix = `run \`groups regenerate-key ${groupWord({ name: ref, id: k.groupId })}\` for a new one (it keeps this key's lifetime of ${lifetimeWords(k)}${limit}: --ttl${k.maxUses === null ? '' : ', --max-uses or --unlimited'} to change them)`;
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
            ? `${k.status}, but the group is disabled: it enrolls nobody until \`groups enable ${groupWord({ name: ref, id: k.groupId })}\``
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

/** `--ttl`: checked here as the server checks it (1s to 365d), and sent as it was written. */
const keyTtlText = z.string().superRefine((text, ctx) => {
  const parsed = keyTtlSchema.safeParse(text);
  if (!parsed.success)
    ctx.addIssue({ code: 'custom', message: parsed.error.issues[0]?.message ?? 'is not valid' });
});

/** `--max-uses` and `--ttl` of a group's key, checked before any call (usage errors exit 2). */
function keyPolicyFlags(whose: string) {
  return {
    maxUses: flag(
      '--max-uses <n>',
      `${whose} enrolls at most this many connectors (default: no limit)`,
      wholeNumber(1, MAX_KEY_USES).optional(),
    ),
    ttl: flag(
      '--ttl <duration>',
      `${whose}'s lifetime, 1s to 365d (default: the server's --key-ttl)`,
      keyTtlText.optional(),
    ),
  };
}

/** `groups create | list | get | rename | disable | enable | delete | key | regenerate-key | next-steps`. */
export function registerGroupCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  const groups = program.command('groups').description('manage connector groups and their provisioning keys');
  const createFlags = {
    description: flag('--description <text>', 'a description', z.string().optional()),
    ...keyPolicyFlags('its first key'),
  };
  admin.command(
    groups,
    'create <name>',
    'create a group (its provisioning key is made with it)',
    createFlags,
    async (client, options, name) => {
      const g = await client.groups.create.mutate({
        name: name!,
        ...(options.description ? { description: options.description } : {}),
        ...keyPolicy(options),
      });
      print(options, g, () => {
        printGroup(g);
        console.log(
          `\nNext: copy its key with \`npm run -s server -- groups key ${groupWord(g)}${connectionFlags(options, env)}\` and run an agent with it.`,
        );
      });
    },
  );
  admin.command(groups, 'list', 'list groups with connector counts', async (client, options) => {
    const list = await client.groups.list.query({});
    print(options, list, () =>
      printTable(
        ['ID', 'NAME', 'STATUS', 'CONNECTORS', 'CONNECTED', 'KEY', 'CREATED'],
        list.map((g) => [
          g.id,
          g.name,
          g.status,
          g.counts.total,
          g.counts.connected,
          keyWords(g),
          g.createdAt,
        ]),
        'No groups yet: create one with `groups create NAME`.',
      ),
    );
  });
  admin.command(groups, 'get <group>', 'show one group', async (client, options, ref) => {
    const g = await client.groups.get.query({ groupId: await resolveGroup(client, ref!) });
    print(options, g, () => printGroup(g));
  });
  admin.command(groups, 'rename <group> <name>', 'rename a group', async (client, options, ref, name) => {
    const g = await client.groups.update.mutate({ groupId: await resolveGroup(client, ref!), name: name! });
    print(options, g, () => printGroup(g));
  });
  for (const verb of ['disable', 'enable'] as const) {
    admin.command(
      groups,
      `${verb} <group>`,
      `${verb} a group (pushed live to its connectors)`,
      async (client, options, ref) => {
        const g = await client.groups[verb].mutate({ groupId: await resolveGroup(client, ref!) });
        print(options, g, () => {
          if (!g.changed) console.error(`Group ${g.name} was already ${g.status}; nothing changed.`);
          printGroup(g);
        });
      },
    );
  }
  const deleteFlags = forceFlag('also end the sessions of its connectors and delete them');
  admin.command(groups, 'delete <group>', 'delete a group', deleteFlags, async (client, options, ref) => {
    const { force } = options;
    const groupId = await resolveGroup(client, ref!);
    // What went with it, said after: the API answers only that it is gone.
    const before = options.json ? null : await client.groups.get.query({ groupId });
    const r = await client.groups.delete.mutate({ groupId, force });
    print(options, r, () => {
      const with_ = before?.counts.total ? `, with its ${before.counts.total} connector(s)` : '';
      console.log(`Group ${before ? `${before.name} (${groupId})` : groupId} deleted${with_}.`);
    });
  });
  admin.command(
    groups,
    'key <group>',
    "show the group's current provisioning key (the key alone on stdout; fails if it can no longer enroll)",
    async (client, options, ref) => {
      const groupId = await resolveGroup(client, ref!);
      printKey(options, await client.provisioningKeys.get.query({ groupId }), ref!);
    },
  );
  admin.command(
    groups,
    'regenerate-key <group>',
    "replace the key: the old one stops working at once; the new one keeps the current one's use limit and lifetime unless a flag changes them",
    {
      maxUses: flag(
        '--max-uses <n>',
        "the new key enrolls at most this many connectors (default: the current key's limit)",
        wholeNumber(1, MAX_KEY_USES).optional(),
      ),
      unlimited: flag(
        '--unlimited',
        'the new key enrolls any number of connectors (the current one had a limit)',
        z.boolean().default(false),
      ),
      ttl: flag(
        '--ttl <duration>',
        "the new key's lifetime, 1s to 365d (default: the current key's)",
        keyTtlText.optional(),
      ),
    },
    async (client, options, ref) => {
      if (options.unlimited && options.maxUses !== undefined)
        throw new CliError('--max-uses and --unlimited say opposite things: give one', 2);
      const groupId = await resolveGroup(client, ref!);
      // A single-use group stays single-use: what no flag names is kept, as the console and a
      // revoke keep it (the API's own default, no limit and --key-ttl, dropped it silently).
      const current = await client.provisioningKeys.get.query({ groupId });
      const keptTtl = `${Math.min(365 * 86_400, Math.max(1, Math.round((Date.parse(current.expiresAt) - Date.parse(current.createdAt)) / 1000)))}s`;
      const maxUses = options.unlimited ? undefined : (options.maxUses ?? current.maxUses ?? undefined);
      printKey(
        options,
        await client.provisioningKeys.regenerate.mutate({
          groupId,
          ttl: options.ttl ?? keptTtl,
          ...(maxUses === undefined ? {} : { maxUses }),
        }),
        ref!,
      );
    },
  );
  admin.command(groups, 'next-steps', 'groups that have no connectors yet', async (client, options) => {
    const steps = await client.groups.nextSteps.query({});
    print(options, steps, () =>
      printTable(
        ['GROUP', 'NEXT STEP', 'HOW'],
        // The API's hint with this command's --server and key flags.
        steps.map((s) => [
          s.name,
          s.step,
          deployHint({ name: s.name, id: s.groupId }, connectionFlags(options, env)),
        ]),
        'Every group has connectors.',
      ),
    );
  });
}

/** The key policy to send: only the flags given. */
function keyPolicy(options: { maxUses?: number | undefined; ttl?: string | undefined }) {
  return {
    ...(options.maxUses !== undefined ? { maxUses: options.maxUses } : {}),
    ...(options.ttl !== undefined ? { ttl: options.ttl } : {}),
  };
}
