import { deepFreeze, setRecord } from '../record-tables.js';
import type { StoreData } from '../records.js';
import { SECTIONS, type StoreSection } from '../store.js';
import type { ChangeOp, ChangeRow } from './changes.js';
import type { CommittedVersions } from './committed-versions.js';

/** A record another replica changed, as this replica's memory had it and has it now. */
export interface RemoteChange {
  section: StoreSection;
  id: string;
  before: object | undefined;
  after: object | undefined;
}
export type RemoteChangeListener = (changes: RemoteChange[]) => void;

/**
 * The ops of feed rows that this replica's memory lacks: another replica's, of a section this build
 * knows, newer than the record held. This replica's own rows are in memory already (their versions
 * were noted at commit); reading them back retires their tombstones.
 */
export function newerRemoteOps(rows: ChangeRow[], origin: string, versions: CommittedVersions): ChangeOp[] {
  const ops: ChangeOp[] = [];
  for (const row of rows) {
    if (row.origin === origin) versions.ownChangeRead(row.ops);
    else for (const op of row.ops) if (SECTIONS.includes(op.section) && versions.isNewer(op)) ops.push(op);
  }
  return ops;
}

/** Applies the ops to memory (the committed state: no local transaction applied over it). */
export function applyRemoteOps(
  data: StoreData,
  versions: CommittedVersions,
  ops: ChangeOp[],
): RemoteChange[] {
  const changes: RemoteChange[] = [];
  for (const op of ops) {
    if (!versions.isNewer(op)) continue; // behind an op of the same record applied just before
    const table = data[op.section] as Record<string, object>;
    const before = Object.hasOwn(table, op.id) ? table[op.id] : undefined;
    const after = op.body === null ? undefined : deepFreeze(sharingUnchanged(before, op.body));
    setRecord(data, op.section, op.id, after);
    versions.committed(op, false);
    changes.push({ section: op.section, id: op.id, before, after });
  }
  return changes;
}

/**
 * `after`, with each field whose value equals `before`'s (as JSON) taken from `before`. Most ops
 * another replica sends change a field or two of a record (a connector's first connect, its host
 * facts); applied whole, each left the held copy's strings and nested objects to the old generation
 * as garbage, and the major collections that garbage caused were most of a listening replica's CPU
 * while another replica took a fleet's first connects. Shared, only the record's top level is new.
 */
export function sharingUnchanged(before: object | undefined, after: object): object {
  if (before === undefined || Array.isArray(after)) return after;
  const held = before as Record<string, unknown>;
  const fresh = after as Record<string, unknown>;
  const shared: Record<string, unknown> = {};
  for (const key in fresh) {
    const value = fresh[key];
    shared[key] = Object.hasOwn(held, key) && sameJson(held[key], value) ? held[key] : value;
  }
  return shared;
}

/** Whether two JSON values are equal (the values JSON.parse makes: no undefined, no cycles). */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const left = a as Record<string, unknown>;
  const right = b as Record<string, unknown>;
  let keys = 0;
  for (const key in left) {
    if (!Object.hasOwn(right, key) || !sameJson(left[key], right[key])) return false;
    keys++;
  }
  for (const _ in right) keys--;
  return keys === 0;
}

/**
 * Makes memory the loaded state (after a gap in the feed: rows this replica had not read were pruned).
 * Each record whose committed version differs from the loaded one, or that is gone from it, is
 * replaced: those are the changes it missed, returned as remote changes so the sessions hear of them.
 * The caller holds no commit in flight and has undone its queued transactions.
 */
export function replaceState(
  data: StoreData,
  versions: CommittedVersions,
  loaded: { data: StoreData; versions: CommittedVersions },
): RemoteChange[] {
  const changes: RemoteChange[] = [];
  for (const section of SECTIONS) {
    const held = data[section] as Record<string, object>;
    const fresh = loaded.data[section] as Record<string, object>;
    for (const [id, after] of Object.entries(fresh)) {
      if (versions.of(section, id) === loaded.versions.of(section, id) && Object.hasOwn(held, id)) continue;
      changes.push({ section, id, before: held[id], after });
    }
    for (const [id, before] of Object.entries(held))
      if (!Object.hasOwn(fresh, id)) changes.push({ section, id, before, after: undefined });
  }
  for (const change of changes) setRecord(data, change.section, change.id, change.after);
  return changes;
}
