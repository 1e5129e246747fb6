import { nearest } from './nearest.js';

/**
 * Every audit event type the server writes, defined once: the server records only these (a typo
 * there does not compile), and `audit --type` is checked against them (a typo there would list
 * nothing and say "No events."). docs/reference.md describes each; reference-doc.test.ts keeps the
 * two in step.
 */
export const AUDIT_EVENT_TYPES = [
  'group.created',
  'group.updated',
  'group.enabled',
  'group.disabled',
  'group.deleted',
  'provisioning_key.regenerated',
  'enrollment.succeeded',
  'enrollment.refused',
  'session.connected',
  'session.refused',
  'session.replaced',
  'identity.renewed',
  'connector.enabled',
  'connector.disabled',
  'connector.revoked',
  'connector.revocation_confirmed',
  'connector.deleted',
  'connector.deletion_confirmed',
  'connector.pending_expired',
  'api_key.bootstrapped',
  'api_key.created',
  'api_key.deleted',
  'signing_key.rotated',
  'signing_key.retired',
  'admin.refused',
  'backup.created',
  'backup.restored',
  'database.imported',
  'audit.pruned',
  'audit.events_dropped',
] as const;

export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** The types `audit --type <filter>` selects: the type itself, or those under it (`enrollment`). */
export function auditTypesMatching(filter: string): AuditEventType[] {
  return AUDIT_EVENT_TYPES.filter((type) => type === filter || type.startsWith(`${filter}.`));
}

/** The first parts of the types (`group`, `enrollment`, …), in the list's order. */
export const AUDIT_TYPE_PREFIXES: readonly string[] = [
  ...new Set(AUDIT_EVENT_TYPES.map((type) => type.slice(0, type.indexOf('.')))),
];

/**
 * For a type filter no event type is or starts with (a typo would list nothing and say only "No
 * events."): the types or first parts it most likely meant. Null when the filter selects some.
 */
export function auditTypeMisses(filter: string): string[] | null {
  if (auditTypesMatching(filter).length > 0) return null;
  return nearest(filter, [...AUDIT_TYPE_PREFIXES, ...AUDIT_EVENT_TYPES]);
}

/**
 * How many refusals a coalesced summary event stands for (`details.suppressed`: the window's
 * repeats after its first, which has a row of its own); null for any other event.
 */
export function refusalsCounted(event: { details: Record<string, unknown> }): number | null {
  const count = event.details.suppressed;
  return typeof count === 'number' && Number.isInteger(count) && count > 0 ? count : null;
}
