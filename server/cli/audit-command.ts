import type { Command } from 'commander';
import { z } from 'zod';
import { AUDIT_TYPE_PREFIXES, auditTypeMisses, refusalsCounted } from '../../shared/audit-event-types.js';
import { didYouMean } from '../../shared/nearest.js';
import { MAX_AUDIT_PAGE } from '../../shared/schemas.js';
import { shellWord } from '../shell-words.js';
import { type AdminEnv, adminCli, connectionFlags, print } from './admin-common.js';
import { flag, pointInTime, wholeNumber } from './flags.js';
import { printTable } from './format.js';

const auditFlags = {
  since: flag(
    '--since <time>',
    'only events at or after this time: an ISO date-time (UTC without a zone), a date, or how long ago (2h, 7d)',
    pointInTime().optional(),
  ),
  before: flag(
    '--before <event-id>',
    'the next page: events logged before this one (the last id shown)',
    z.string().optional(),
  ),
  limit: flag('--limit <n>', `at most this many, 1 to ${MAX_AUDIT_PAGE}`, wholeNumber(1, MAX_AUDIT_PAGE), {
    default: '50',
  }),
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
          // A coalesced summary: the one row of that many refusals.
          e.reason && refusalsCounted(e) ? `${e.reason} ×${refusalsCounted(e)}` : e.reason,
          e.remoteAddress,
          e.groupId,
          e.connectorId,
          e.keyId,
          e.security ? 'YES' : '',
        ]),
        'No events.',
      );
      if (events.length === 0 && options.type) {
        const unknown = unknownTypeHint(options.type);
        if (unknown) console.error(unknown);
      }
      const last = events.at(-1);
      // The next page with the same filters: run as printed, it continues this listing.
      const same = [
        ...(options.type ? ['--type', options.type] : []),
        ...(options.security ? ['--security'] : []),
        ...(options.since ? ['--since', options.since] : []),
        ...(limit !== 50 ? ['--limit', String(limit)] : []),
      ];
      // The flags that sent this one where it went too (--server, the key): else the next page
      // would ask the default server.
      if (last && events.length === limit)
        console.log(
          `Older: audit --before ${last.id}${same.map((a) => ` ${shellWord(a)}`).join('')}${connectionFlags(options, env)}`,
        );
    });
  });
}

/**
 * What to say when `--type` names no type the server writes (so "No events." would hide a typo):
 * null when it names one, or a prefix of some.
 */
function unknownTypeHint(filter: string): string | null {
  const misses = auditTypeMisses(filter);
  if (!misses) return null;
  return `no audit event type is "${filter}" or starts with "${filter}.";${didYouMean(misses)} (the types start with ${AUDIT_TYPE_PREFIXES.join(', ')})`;
}
