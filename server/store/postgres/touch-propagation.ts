import { withFields } from '../record-tables.js';
import type { StoreSection } from '../store.js';

/**
 * The touched fields other replicas must hear of: a touch of one of them gives the record a new
 * version and a change-feed op (coalesced with the other touches of the same turn or flush: one op per
 * record per commit, whatever the number of touches).
 *
 * - `identity` (a renewal): `signing-keys retire` on any replica counts the identities an old key
 *   still signs; with a stale copy it would refuse or allow a retirement wrongly. One per connector
 *   per half identity lifetime (renewals are rate limited), so it cannot flood the feed.
 * - `host` (the agent's facts): admins read them on any replica, and a replica whose copy is current
 *   spares the agent a report when it reconnects there (the digest in `ready` matches). The agent
 *   sends them only when they changed, checked every 5 minutes.
 *
 * The others stay loss-tolerant and local (merged into the row without a version): `lastSeenAt`
 * moves at every connect and disconnect, and a fleet reconnecting after a replica died would turn
 * each connect into a feed op and a version bump that other replicas' writes of the same connector
 * then conflict with; the connection fields (`lastConnectedAt`, `remoteAddress`, `lastReplacedAt`,
 * `replacedFrom`) come with the same connects (a connector's first connect excepted: see
 * touchPropagates), and the live session's replica, address and connect
 * time already reach every replica through the cluster sessions table. An admin key's `lastUsedAt`
 * moves with every admin call (a script polling the API would make one op a second). A versioned
 * write of such a record from another replica does not take them back: see FRESHER_WINS.
 */
const PROPAGATED: Partial<Record<StoreSection, ReadonlySet<string>>> = {
  connectors: new Set(['identity', 'host']),
};

/**
 * Whether touching these fields of `current`, a record of `section`, must reach the other replicas.
 * Besides the fields above, a connector's first connect (`lastConnectedAt` set where it was null):
 * "never connected" is what the pending sweep deletes on, and any replica may sweep. Kept local,
 * a replica that never held the connector's session swept it, connected or briefly offline, once
 * it was older than `--pending-ttl`. Once per connector, so it cannot flood the feed either.
 */
export function touchPropagates(section: StoreSection, fields: object, current: object): boolean {
  const propagated = PROPAGATED[section];
  if (propagated !== undefined && Object.keys(fields).some((field) => propagated.has(field))) return true;
  return (
    section === 'connectors' &&
    (fields as { lastConnectedAt?: unknown }).lastConnectedAt != null &&
    (current as { lastConnectedAt?: unknown }).lastConnectedAt == null
  );
}

/**
 * The local fields in groups that move together, each with the field that orders it (a time). A
 * replica writing a record whole (a revoke, a disable) holds its own copy of them, which misses the
 * touches of the replica holding the session: the stored group is kept when its clock is newer than
 * the written one's, in the database, in the feed's op (so every replica gets it) and in the
 * writer's memory. Without it a revoke through another replica set the connector's last connect
 * back, or to null ("never connected"). Newest wins, so the rule is safe to apply in any order.
 */
export const FRESHER_WINS: ReadonlyArray<{
  section: StoreSection;
  clock: string;
  fields: readonly string[];
}> = [
  { section: 'connectors', clock: 'lastSeenAt', fields: ['lastSeenAt'] },
  { section: 'connectors', clock: 'lastConnectedAt', fields: ['lastConnectedAt', 'remoteAddress'] },
  { section: 'connectors', clock: 'lastReplacedAt', fields: ['lastReplacedAt', 'replacedFrom'] },
  { section: 'apiKeys', clock: 'lastUsedAt', fields: ['lastUsedAt'] },
];

/**
 * SQL for the jsonb object of the groups `stored` (a jsonb expression) holds newer than `written`,
 * for a row of `section` (a text expression): '{}' when none. Names come from FRESHER_WINS, never input.
 */
export function fresherStoredSql(section: string, stored: string, written: string): string {
  const clock = (body: string, field: string) => `(${body}->>'${field}')::float8`;
  return FRESHER_WINS.map(
    (group) =>
      `CASE WHEN ${section} = '${group.section}' AND ${clock(stored, group.clock)} > COALESCE(${clock(written, group.clock)}, '-Infinity'::float8)
            THEN jsonb_strip_nulls(jsonb_build_object(${group.fields.map((f) => `'${f}', ${stored}->'${f}'`).join(', ')}))
            ELSE '{}'::jsonb END`,
  ).join(' || ');
}

/** `record` with each group of `kept` (fields the database kept) that is newer than its own: null if none is. */
export function withFresher<R extends object>(
  section: StoreSection,
  record: R,
  kept: Record<string, unknown>,
): R | null {
  const fields: Record<string, unknown> = {};
  const own = record as Record<string, unknown>;
  for (const group of FRESHER_WINS) {
    if (group.section !== section || typeof kept[group.clock] !== 'number') continue;
    const mine = own[group.clock];
    if (typeof mine === 'number' && mine >= (kept[group.clock] as number)) continue;
    for (const field of group.fields) if (field in kept) fields[field] = kept[field];
  }
  return Object.keys(fields).length > 0 ? withFields(record, fields as Partial<R>) : null;
}
