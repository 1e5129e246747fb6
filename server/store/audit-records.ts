// What the audit log holds, and what its backends (the file, audit-files.ts; the table,
// postgres/audit-table.ts) offer the service over it.

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

/** What one page of the log selects, newest first: see `AuditFilter` in services/audit.ts. */
export interface AuditPageFilter {
  since?: string | undefined;
  /** The id of the last event of the previous page. */
  before?: string | undefined;
  type?: string | undefined;
  /** Only events whose `security` flag is this. */
  security?: boolean | undefined;
  limit: number;
}

/** Where a durable audit log keeps its events: a file (AuditFile) or a table (AuditTable). */
export interface AuditSink {
  /** Resolves once `event` is durable; a lazy one may wait up to LAZY_AUDIT_FLUSH_MS for company. */
  append(event: AuditEvent, lazy: boolean): Promise<void>;
  /** A page, newest first, with every event appended so far included. */
  list(page: AuditPageFilter): Promise<AuditEvent[]>;
  /** Writes what is buffered; releases what the sink holds of its own. */
  close(): Promise<void>;
}
