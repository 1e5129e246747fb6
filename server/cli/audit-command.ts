import type { Command } from 'commander';
import { z } from 'zod';
import { type AdminEnv, adminCli, print } from './admin-common.js';
import { flag, wholeNumber } from './flags.js';
import { printTable } from './format.js';

const auditFlags = {
  since: flag(
    '--since <iso>',
    'only events at or after this time (older files are not read)',
    z.string().optional(),
  ),
  before: flag(
    '--before <event-id>',
    'the next page: events logged before this one (the last id shown)',
    z.string().optional(),
  ),
  limit: flag('--limit <n>', 'at most this many', wholeNumber(1, 10_000), { default: '50' }),
  type: flag('--type <type>', 'only this event type (or prefix, e.g. enrollment)', z.string().optional()),
  security: flag('--security', 'only events flagged security', z.boolean().default(false)),
};

/** `audit [--since ISO] [--before EVENT] [--limit N] [--type TYPE] [--security]`. */
export function registerAuditCommand(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  admin.command(program, 'audit', 'show the audit log, newest first', auditFlags, async (client, options) => {
    const { limit } = options;
    const events = await client.audit.list.query({
      limit,
      ...(options.since ? { since: options.since } : {}),
      ...(options.before ? { before: options.before } : {}),
      ...(options.type ? { type: options.type } : {}),
      ...(options.security ? { security: true } : {}),
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
      if (last && events.length === limit) console.log(`Older: audit --before ${last.id}`);
    });
  });
}
