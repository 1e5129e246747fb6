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
 * `replacedFrom`) come with the same connects, and the live session's replica, address and connect
 * time already reach every replica through the cluster sessions table. An admin key's `lastUsedAt`
 * moves with every admin call (a script polling the API would make one op a second).
 */
const PROPAGATED: Partial<Record<StoreSection, ReadonlySet<string>>> = {
  connectors: new Set(['identity', 'host']),
};

/** Whether touching these fields of a record of `section` must reach the other replicas. */
export function touchPropagates(section: StoreSection, fields: object): boolean {
  const propagated = PROPAGATED[section];
  return propagated !== undefined && Object.keys(fields).some((field) => propagated.has(field));
}
