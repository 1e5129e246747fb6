// What the audit log's lines hold: kept beside the files that hold them (audit-files.ts).

/** Who caused an event. */
export type AuditActor =
  | { kind: 'admin'; apiKeyId: string }
  | { kind: 'agent'; connectorId: string | null }
  | { kind: 'system' }
  /** A caller who proved nothing: a missing or made-up admin key. */
  | { kind: 'anonymous' };

/** One audit event as written, one JSON line each. */
export interface AuditEvent {
  id: string;
  at: string;
  /** Dotted, e.g. `group.created`, `enrollment.refused`, `session.replaced`. */
  type: string;
  actor: AuditActor;
  outcome: 'success' | 'refused';
  reason: string | null;
  /** Set on events a security team should look at (a superseded or expired key in use, …). */
  security: boolean;
  remoteAddress: string | null;
  groupId: string | null;
  connectorId: string | null;
  keyId: string | null;
  details: Record<string, unknown>;
}
