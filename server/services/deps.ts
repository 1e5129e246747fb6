import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import type { AuditActor, AuditLog } from './audit.js';
import type { DomainEvents } from './events.js';
import type { IdentityAuthority } from './identity.js';
import type { SecretBox } from './secrets.js';
import type { UnsavedTerminations } from './unsaved-terminations.js';
import type { Termination } from './views.js';

/** Who asks, from where: carried into the audit log. */
export interface RequestMeta {
  actor: AuditActor;
  remoteAddress: string | null;
}

/**
 * Whether a connector has a live session right now. The session registry answers it: it depends on
 * no service, so the services are given it before the session hub that fills it is built.
 */
export interface Presence {
  isConnected(connectorId: string): boolean;
  /**
   * Whether the connector's live session is on this server: one a revoke or delete here ends at
   * once. A session on another replica hears of it only once the change is committed (the feed).
   */
  holdsHere(connectorId: string): boolean;
  /** The id of the replica holding the connector's live session; null when none does, or on a single server. */
  replicaOf(connectorId: string): string | null;
  /**
   * Whether the agent of the session a revoke or delete of this connector just ended acknowledged
   * it: waits up to the acknowledgement bound, `pending` at once when no session was ended. Given
   * the revoke's or delete's write (`committed`), a session on another replica is waited for as
   * well: that replica records a revocation's confirmation on the connector and announces a
   * deletion's (`deletionConfirmed`); the bound counts from the commit.
   */
  termination(connectorId: string, committed?: Promise<unknown>): Promise<Termination>;
  /**
   * The host of `connectorId` confirmed its deletion here: a delete made through another replica
   * waits for that (a revoke's confirmation travels on the connector's record instead).
   */
  deletionConfirmed(connectorId: string, at: number, from: string): void;
}

export interface Policy {
  /** Lifetime of a provisioning key. @default 14 days */
  keyTtlMs: number;
  /** Lifetime of an identity. @default 365 days */
  identityTtlMs: number;
  /** How long an enrolled connector may stay without ever connecting. @default 7 days */
  pendingTtlMs: number;
}

/**
 * The capabilities services are built from, behind interfaces; each service takes only the ones it
 * uses (its `<Service>Deps`, a Pick of these), and `createServices` hands them out.
 */
export interface ServiceDeps {
  store: Store;
  audit: AuditLog;
  clock: Clock;
  events: DomainEvents;
  secretBox: SecretBox;
  identity: IdentityAuthority;
  presence: Presence;
  policy: Policy;
  metrics: Metrics;
  logger: Logger;
  /** Connectors cut off by a revoke or delete whose write has not landed (or failed). */
  unsavedTerminations: UnsavedTerminations;
}

export const systemMeta: RequestMeta = { actor: { kind: 'system' }, remoteAddress: null };
