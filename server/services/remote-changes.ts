import type { ConnectorRecord, GroupRecord } from '../store/records.js';
import type { StoreSection } from '../store/store.js';
import type { DomainEvent } from './events.js';
import type { Termination } from './views.js';

/** One record as another replica changed it: `before` and `after` are undefined where it did not exist. */
export interface RecordChange {
  section: StoreSection;
  id: string;
  before: object | undefined;
  after: object | undefined;
}

/** What the translation reads of the current state: the connectors of a group, as they are now. */
export interface GroupMembers {
  connectorIdsOf(groupId: string): string[];
}

/**
 * The domain events the session hub needs for changes another replica committed, the same ones the
 * services announce for a change made here (ConnectorService.setStatus/revoke/delete/sweepPending,
 * GroupService.setStatus/delete), so an agent's session hears of a change whichever replica made it.
 *
 * A group's deletion removes its connectors in the same transaction: those deletions go into the one
 * `group.deleted` (as GroupService.delete announces it), not into a `connector.deleted` each. A
 * group's status change carries the group's connectors as they are after the change. Changes nobody
 * is told of (last seen, host facts, a rotated key, new records) give no event.
 */
export function domainEventsOf(changes: readonly RecordChange[], groups: GroupMembers): DomainEvent[] {
  const events: DomainEvent[] = [];
  const deletedGroups = new Map<string, string[]>();
  for (const change of changes) {
    if (change.section === 'groups' && change.before && !change.after) deletedGroups.set(change.id, []);
  }
  const connectorEvents: DomainEvent[] = [];
  for (const change of changes) {
    if (change.section !== 'connectors') continue;
    const before = change.before as ConnectorRecord | undefined;
    const after = change.after as ConnectorRecord | undefined;
    if (!before) continue; // enrolled: no session can be live yet
    const inDeletedGroup = !after ? deletedGroups.get(before.groupId) : undefined;
    if (inDeletedGroup) inDeletedGroup.push(change.id);
    else {
      const event = connectorEvent(change.id, before, after);
      if (event) connectorEvents.push(event);
    }
  }
  for (const change of changes) {
    if (change.section !== 'groups') continue;
    const before = change.before as GroupRecord | undefined;
    const after = change.after as GroupRecord | undefined;
    if (before && !after) {
      events.push({
        type: 'group.deleted',
        groupId: change.id,
        connectorIds: deletedGroups.get(change.id) ?? [],
      });
    } else if (before && after && before.status !== after.status) {
      events.push({
        type: 'group.status',
        groupId: change.id,
        status: after.status,
        connectorIds: groups.connectorIdsOf(change.id),
      });
    }
  }
  return [...connectorEvents, ...events];
}

function connectorEvent(
  connectorId: string,
  before: ConnectorRecord,
  after: ConnectorRecord | undefined,
): DomainEvent | null {
  if (!after) return { type: 'connector.deleted', connectorId };
  if (after.status === before.status) return null;
  if (after.status === 'revoked')
    return { type: 'connector.revoked', connectorId, reason: after.revokeReason };
  // A revoked connector never comes back; a record that claims it did is not acted on.
  if (before.status === 'revoked') return null;
  return { type: 'connector.status', connectorId, status: after.status };
}

/** A revocation another replica recorded as confirmed by the connector's host. */
export interface RemoteConfirmation {
  connectorId: string;
  termination: Termination;
}

/**
 * The revocations whose confirmation another replica recorded in these changes (its agent
 * acknowledged there, or a later handshake there was refused): a revoke made here of a session on
 * that replica waits for them.
 */
export function revocationConfirmationsOf(changes: readonly RecordChange[]): RemoteConfirmation[] {
  const confirmed: RemoteConfirmation[] = [];
  for (const change of changes) {
    if (change.section !== 'connectors') continue;
    const before = change.before as ConnectorRecord | undefined;
    const after = change.after as ConnectorRecord | undefined;
    const at = after?.revocationConfirmedAt ?? null;
    if (after?.status !== 'revoked' || at === null || (before?.revocationConfirmedAt ?? null) !== null)
      continue;
    confirmed.push({
      connectorId: change.id,
      termination: {
        state: 'confirmed',
        confirmedAt: new Date(at).toISOString(),
        confirmedFrom: after.revocationConfirmedFrom ?? null,
      },
    });
  }
  return confirmed;
}
