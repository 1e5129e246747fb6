import type { ConnectorRecord, GroupRecord } from '../store/records.js';
import type { StoreView } from '../store/store.js';
import type { Presence } from './deps.js';
import { type KeyState, keyState } from './provisioning-keys.js';

export interface ConnectorCounts {
  total: number;
  connected: number;
  disconnected: number;
  neverConnected: number;
  enabled: number;
  disabled: number;
  revoked: number;
}

export type ConnectionState = 'connected' | 'disconnected' | 'never';

/** A stored millisecond time as callers see it: an ISO 8601 string (null stays null). */
export function iso(ms: number): string;
export function iso(ms: number | null): string | null;
export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/**
 * The status a connector's agent works under: disabled if the connector or its group is (a revoked
 * one never gets this far). The one place this rule is written.
 */
export function effectiveStatus(
  record: Pick<ConnectorRecord, 'status'> | undefined,
  group: Pick<GroupRecord, 'status'> | undefined,
): 'enabled' | 'disabled' {
  return record?.status === 'disabled' || group?.status === 'disabled' ? 'disabled' : 'enabled';
}

export function connectionOf(record: ConnectorRecord, presence: Presence): ConnectionState {
  if (presence.isConnected(record.id)) return 'connected';
  return record.lastConnectedAt === null ? 'never' : 'disconnected';
}

export function emptyCounts(): ConnectorCounts {
  return { total: 0, connected: 0, disconnected: 0, neverConnected: 0, enabled: 0, disabled: 0, revoked: 0 };
}

export function addToCounts(counts: ConnectorCounts, record: ConnectorRecord, presence: Presence): void {
  counts.total++;
  counts[record.status]++;
  const connection = connectionOf(record, presence);
  if (connection === 'connected') counts.connected++;
  else if (connection === 'disconnected') counts.disconnected++;
  else counts.neverConnected++;
}

/** Counts per group id, in one pass over the connectors. */
export function countsByGroup(view: StoreView, presence: Presence): Map<string, ConnectorCounts> {
  const byGroup = new Map<string, ConnectorCounts>();
  for (const group of view.list('groups')) byGroup.set(group.id, emptyCounts());
  for (const record of view.list('connectors')) {
    const counts = byGroup.get(record.groupId);
    if (counts) addToCounts(counts, record, presence);
  }
  return byGroup;
}

/** What a group's view shows of its current provisioning key: no secret, enough to warn of expiry. */
export interface CurrentKeySummary {
  id: string;
  expiresAt: string;
  status: KeyState;
  uses: number;
  maxUses: number | null;
}

/** The summary of `group`'s current key at `now`; null in a store that lost it. */
export function currentKeySummary(
  view: StoreView,
  group: GroupRecord,
  now: number,
): CurrentKeySummary | null {
  const key = view.get('provisioningKeys', group.currentKeyId);
  if (!key) return null;
  return {
    id: key.id,
    expiresAt: iso(key.expiresAt),
    status: keyState(key, now),
    uses: key.uses ?? 0,
    maxUses: key.maxUses ?? null,
  };
}

export function groupView(group: GroupRecord, counts: ConnectorCounts, currentKey: CurrentKeySummary | null) {
  return {
    id: group.id,
    name: group.name,
    description: group.description,
    status: group.status,
    createdAt: new Date(group.createdAt).toISOString(),
    counts,
    /** The group's current provisioning key (null only in a damaged store). */
    currentKey,
  };
}
export type GroupView = ReturnType<typeof groupView>;

/** Whether the host of a revoked or deleted connector learnt it, and when and from where. */
export interface Termination {
  /** `confirmed`: the host acknowledged (it heard it and wiped its identity); else `pending`. */
  state: 'confirmed' | 'pending';
  /** When the host confirmed it (ISO), or null. */
  confirmedAt: string | null;
  /** The address it confirmed from, or null. */
  confirmedFrom: string | null;
}

/** A revoked connector's termination as stored; null for one that is not revoked. */
function terminationOf(record: ConnectorRecord): Termination | null {
  if (record.status !== 'revoked') return null;
  const confirmedAt = record.revocationConfirmedAt ?? null;
  return {
    state: confirmedAt === null ? 'pending' : 'confirmed',
    confirmedAt: iso(confirmedAt),
    confirmedFrom: record.revocationConfirmedFrom ?? null,
  };
}

/**
 * What an admin sees of a connector at `now`. A connected one is seen now: its stored `lastSeenAt`
 * is only written when a session ends (and lazily), so it would age while the agent is live.
 */
export function connectorView(record: ConnectorRecord, presence: Presence, now: number) {
  const connection = connectionOf(record, presence);
  return {
    id: record.id,
    groupId: record.groupId,
    name: record.name,
    status: record.status,
    connection,
    enrolledAt: new Date(record.enrolledAt).toISOString(),
    lastConnectedAt: iso(record.lastConnectedAt),
    lastSeenAt: connection === 'connected' ? iso(now) : iso(record.lastSeenAt),
    remoteAddress: record.remoteAddress,
    /** With replicas: the id of the one holding the live session (`replicas` lists them); else null. */
    replica: connection === 'connected' ? presence.replicaOf(record.id) : null,
    /** Set when a session with this identity replaced a live one: another host may hold it. */
    lastReplacedAt: iso(record.lastReplacedAt ?? null),
    replacedFrom: record.replacedFrom ?? null,
    agentVersion: record.agentVersion,
    host: record.host,
    identity: {
      issuedAt: new Date(record.identity.issuedAt).toISOString(),
      expiresAt: new Date(record.identity.expiresAt).toISOString(),
      keyId: record.identity.keyId,
    },
    revokedAt: iso(record.revokedAt),
    revokeReason: record.revokeReason,
    /** For a revoked connector: whether and when its host learnt it (see `termination` of revoke). */
    termination: terminationOf(record),
  };
}
export type ConnectorView = ReturnType<typeof connectorView>;
