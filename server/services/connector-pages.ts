import { DomainError } from '../../shared/errors.js';
import type { ConnectorRecord } from '../store/records.js';
import type { StoreView } from '../store/store.js';
import type { Presence } from './deps.js';
import { type ConnectionState, type ConnectorView, connectionOf, connectorView } from './views.js';

export interface ConnectorFilter {
  groupId?: string | undefined;
  status?: ConnectorRecord['status'] | undefined;
  connection?: ConnectionState | undefined;
  cursor?: string | undefined;
  limit?: number | undefined;
  /** Connectors whose name, hostname or id contains this, case-insensitively. */
  search?: string | undefined;
}

/** Whether a connector's name, hostname or id contains `needle` (already lower-cased). */
function matchesSearch(record: Readonly<ConnectorRecord>, needle: string): boolean {
  return (
    record.name.toLowerCase().includes(needle) ||
    (record.host?.hostname ?? '').toLowerCase().includes(needle) ||
    record.id.toLowerCase().includes(needle)
  );
}

export const DEFAULT_PAGE_SIZE = 100;

/**
 * Connectors are listed by (enrolledAt, id): ids break ties between connectors enrolled in the same
 * millisecond, so the order is total and a page can resume strictly after a key.
 */
function compareKeys(aAt: number, aId: string, bAt: number, bId: string): number {
  if (aAt !== bAt) return aAt < bAt ? -1 : 1;
  return aId < bId ? -1 : aId > bId ? 1 : 0;
}

/**
 * Cursor `<enrolledAt base36>-<id>`: the sort key of the last connector returned, so the next page
 * resumes after it whether or not that connector still exists (cursors made before this order was
 * total have the same shape and resume the same way).
 */
function cursorOf(record: Readonly<ConnectorRecord>): string {
  return `${record.enrolledAt.toString(36)}-${record.id}`;
}

function parseCursor(cursor: string): { enrolledAt: number; id: string } {
  const dash = cursor.indexOf('-');
  const time = cursor.slice(0, Math.max(dash, 0));
  const enrolledAt = /^[0-9a-z]{1,11}$/.test(time) ? Number.parseInt(time, 36) : Number.NaN;
  const id = cursor.slice(dash + 1);
  if (!Number.isSafeInteger(enrolledAt) || id.length === 0)
    throw new DomainError('VALIDATION_FAILED', 'The cursor is not valid: pass a nextCursor from a list.');
  return { enrolledAt, id };
}

/**
 * One page of connectors in enrollment order, by (enrolledAt, id). The cursor is the sort key of
 * the last item returned, so pages stay exact while connectors are added or removed elsewhere, the
 * cursor's own one included. The records are kept in enrollment order already, so the sort (a
 * merge sort, linear on sorted runs) costs little more than one pass.
 */
export function connectorPage(
  view: StoreView,
  filter: ConnectorFilter,
  presence: Presence,
  now: number,
): { items: ConnectorView[]; nextCursor: string | null } {
  const limit = filter.limit ?? DEFAULT_PAGE_SIZE;
  const after = filter.cursor ? parseCursor(filter.cursor) : null;
  const needle = filter.search?.toLowerCase();
  if (filter.groupId && !view.get('groups', filter.groupId)) throw new DomainError('GROUP_NOT_FOUND');
  const records = view
    .list('connectors')
    .filter(
      (r) =>
        (!after || compareKeys(r.enrolledAt, r.id, after.enrolledAt, after.id) > 0) &&
        (!filter.groupId || r.groupId === filter.groupId) &&
        (!filter.status || r.status === filter.status) &&
        (!needle || matchesSearch(r, needle)),
    );
  records.sort((a, b) => compareKeys(a.enrolledAt, a.id, b.enrolledAt, b.id));
  const items: ConnectorView[] = [];
  let last: string | null = null;
  let more = false;
  for (const record of records) {
    if (filter.connection && connectionOf(record, presence) !== filter.connection) continue;
    if (items.length === limit) {
      more = true;
      break;
    }
    items.push(connectorView(record, presence, now));
    last = cursorOf(record);
  }
  return { items, nextCursor: more ? last : null };
}
