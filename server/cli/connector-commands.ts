import type { Command } from 'commander';
import { z } from 'zod';
import { connectionStateSchema, connectorStatusSchema, MAX_CONNECTORS_PAGE } from '../../shared/schemas.js';
import { shellWord } from '../shell-words.js';
import {
  type AdminEnv,
  adminCli,
  connectionFlags,
  groupNamesOf,
  print,
  resolveConnector,
  resolveGroup,
} from './admin-common.js';
import { flag, wholeNumber } from './flags.js';
import {
  printFields,
  printTable,
  relative,
  replacementWords,
  shortReplicaId,
  terminationWords,
} from './format.js';

const listFlags = {
  group: flag('--group <group>', 'only this group (id or name)', z.string().optional()),
  status: flag('--status <status>', 'only connectors with this status', connectorStatusSchema.optional(), {
    choices: connectorStatusSchema.options,
  }),
  connection: flag(
    '--connection <state>',
    'only connectors in this state',
    connectionStateSchema.optional(),
    {
      choices: connectionStateSchema.options,
    },
  ),
  limit: flag('--limit <n>', `page size, 1 to ${MAX_CONNECTORS_PAGE}`, wholeNumber(1, MAX_CONNECTORS_PAGE), {
    default: '100',
  }),
  cursor: flag('--cursor <cursor>', 'continue after this cursor', z.string().optional()),
  search: flag(
    '--search <text>',
    'only connectors whose name, hostname or id contains this (any case)',
    z.string().optional(),
  ),
};

/** `connectors list | get | disable | enable | revoke | delete`. */
export function registerConnectorCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  const connectors = program.command('connectors').description('manage enrolled connectors');
  admin.command(connectors, 'list', 'list connectors', listFlags, async (client, options) => {
    const page = await client.connectors.list.query({
      ...(options.group ? { groupId: await resolveGroup(client, options.group) } : {}),
      ...(options.status ? { status: options.status } : {}),
      ...(options.connection ? { connection: options.connection } : {}),
      ...(options.cursor ? { cursor: options.cursor } : {}),
      ...(options.search ? { search: options.search } : {}),
      limit: options.limit,
    });
    // Names read better than ids in a table; one call for the whole page.
    const groupNames = options.json ? new Map<string, string>() : await groupNamesOf(client);
    // With replicas, which one holds each live session (the ids `replicas` lists); one server has none.
    const withReplica = page.items.some((c) => c.replica !== null);
    print(options, page, () => {
      printTable(
        [
          'ID',
          'NAME',
          'GROUP',
          'STATUS',
          'CONNECTION',
          ...(withReplica ? ['REPLICA'] : []),
          'LAST SEEN',
          'ADDRESS',
          'VERSION',
          'REPLACED',
        ],
        page.items.map((c) => [
          c.id,
          c.name,
          groupNames.get(c.groupId) ?? c.groupId,
          // A revoked one says whether its host has learnt it yet.
          c.termination ? `revoked (${c.termination.state})` : c.status,
          c.connection,
          ...(withReplica ? [c.replica ? shortReplicaId(c.replica) : null] : []),
          // A connected one is seen now; its lastSeenAt is the time of the answer.
          c.connection === 'connected' ? 'now' : relative(c.lastSeenAt),
          c.remoteAddress,
          c.agentVersion,
          // A clone's mark: when a session with this identity last replaced another.
          relative(c.lastReplacedAt),
        ]),
        'No connectors.',
      );
      // The next page with the same filters and connection: run as printed, it continues this
      // listing (a bare --cursor gave page 2 of every connector).
      if (page.nextCursor) {
        const same = [
          ...(options.group ? ['--group', options.group] : []),
          ...(options.status ? ['--status', options.status] : []),
          ...(options.connection ? ['--connection', options.connection] : []),
          ...(options.search ? ['--search', options.search] : []),
          ...(options.limit !== 100 ? ['--limit', String(options.limit)] : []),
        ];
        console.log(
          `More: connectors list --cursor ${page.nextCursor}${same.map((a) => ` ${shellWord(a)}`).join('')}${connectionFlags(options, env)}`,
        );
      }
    });
  });
  admin.command(
    connectors,
    'get <connector>',
    'show one connector with its host facts (id, or a name only one has)',
    async (client, options, id) => {
      const c = await client.connectors.get.query({ connectorId: await resolveConnector(client, id!) });
      const groupName = options.json ? undefined : (await groupNamesOf(client)).get(c.groupId);
      print(options, c, () =>
        printFields([
          ['id', c.id],
          ['name', c.name],
          ['group', groupName ? `${groupName} (${c.groupId})` : c.groupId],
          ['status', terminationWords(c.termination) ?? c.status],
          ['connection', c.connection],
          ...(c.replica ? [['replica', c.replica] as [string, string]] : []),
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
    },
  );
  for (const verb of ['disable', 'enable'] as const) {
    admin.command(
      connectors,
      `${verb} <connector>`,
      `${verb} a connector (pushed live; id, or a name only one has)`,
      async (client, options, id) => {
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
      },
    );
  }
  const revokeFlags = { reason: flag('--reason <text>', 'why, for the audit log', z.string().optional()) };
  admin.command(
    connectors,
    'revoke <connector>',
    "revoke for good: ends its session and regenerates its group's key",
    revokeFlags,
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
  );
  admin.command(
    connectors,
    'delete <connector>',
    'delete a connector (ends its session)',
    async (client, options, id) => {
      const connectorId = await resolveConnector(client, id!);
      // What the host had before: a host offline, or one that already wiped its revoked identity,
      // has nothing to confirm, and "not yet confirmed" would send the admin looking for it.
      const before = options.json ? null : await client.connectors.get.query({ connectorId });
      const r = await client.connectors.delete.mutate({ connectorId });
      print(options, r, () =>
        console.log(`Connector ${connectorId} ${deletionWords(r.termination, before)}.`),
      );
    },
  );
}

/** What a delete's answer means for the host, given what the connector was just before it. */
function deletionWords(
  termination: Parameters<typeof terminationWords>[0] & object,
  before: { status: string; connection: string; termination: { state: string } | null } | null,
): string {
  if (termination.state !== 'confirmed' && before) {
    if (before.status === 'revoked' && before.termination?.state === 'confirmed')
      return 'deleted; it was revoked, and its host had already wiped its identity';
    if (before.connection !== 'connected')
      return 'deleted; its host is not connected: it is told at its next connection, and wipes its identity';
  }
  return terminationWords(termination, 'deleted') ?? 'deleted';
}
