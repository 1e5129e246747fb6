import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import { AgentSessionService } from './agent-sessions.js';
import { ApiKeyService } from './api-keys.js';
import type { AuditLog } from './audit.js';
import { ConnectorService } from './connectors.js';
import type { Policy, Presence } from './deps.js';
import { EnrollmentService } from './enrollment.js';
import { DomainEvents } from './events.js';
import { GroupService } from './groups.js';
import { HandshakeChecks } from './handshake-checks.js';
import type { IdentityAuthority } from './identity.js';
import { originOf } from './proof.js';
import { ProvisioningKeyService } from './provisioning-keys.js';
import { AbuseLimiter, type RateLimits } from './rate-limit.js';
import { type ReplicaDirectory, ReplicaService } from './replicas.js';
import type { SecretBox } from './secrets.js';
import { SigningKeyService } from './signing-keys.js';
import { UnsavedTerminations } from './unsaved-terminations.js';

export interface Capabilities {
  store: Store;
  audit: AuditLog;
  clock: Clock;
  secretBox: SecretBox;
  identity: IdentityAuthority;
  logger: Logger;
  metrics: Metrics;
  /** Who is connected: the session registry, which the session hub fills. */
  presence: Presence;
  /** The deployment's server processes: the replicas table, or this one alone. */
  replicas: ReplicaDirectory;
}

/**
 * Builds every service over the given capabilities (real or in-memory), each given only the
 * dependencies it uses.
 */
export function createServices(
  capabilities: Capabilities,
  config: Policy & { rateLimits: RateLimits; publicUrl?: string | null },
): Services {
  const { store, audit, clock, secretBox, identity, logger, metrics, presence, replicas } = capabilities;
  const events = new DomainEvents();
  const policy: Policy = {
    keyTtlMs: config.keyTtlMs,
    identityTtlMs: config.identityTtlMs,
    pendingTtlMs: config.pendingTtlMs,
  };
  const unsavedTerminations = new UnsavedTerminations(audit);
  // Connectors and groups both cut agents off (revoke, delete, disable) and rotate keys.
  const cutOffDeps = {
    store,
    audit,
    clock,
    events,
    presence,
    unsavedTerminations,
    policy,
    secretBox,
    logger,
  };
  const connectors = new ConnectorService({ ...cutOffDeps, metrics });
  return {
    groups: new GroupService(cutOffDeps),
    provisioningKeys: new ProvisioningKeyService({ store, audit, clock, secretBox, policy, logger }),
    connectors,
    enrollment: new EnrollmentService({
      store,
      audit,
      clock,
      identity,
      policy,
      metrics,
      logger,
      publicOrigin: config.publicUrl ? originOf(config.publicUrl) : null,
    }),
    apiKeys: new ApiKeyService({ store, audit, clock, logger }),
    signingKeys: new SigningKeyService({ store, audit, clock, identity, presence, logger }),
    agentSessions: new AgentSessionService({
      store,
      identity,
      connectors,
      audit,
      clock,
      policy,
      metrics,
      logger,
    }),
    handshakes: new HandshakeChecks({
      store,
      identity,
      connectors,
      unsavedTerminations,
      clock,
      sessionsPerConnectorPerMinute: config.rateLimits.sessionsPerConnectorPerMinute,
    }),
    audit,
    limiter: new AbuseLimiter(config.rateLimits, audit, metrics),
    events,
    replicas: new ReplicaService({ directory: replicas, publicUrl: config.publicUrl }),
  };
}

/** What the routers and the HTTP layer are given (with the session hub, which the wiring builds). */
export interface Services {
  groups: GroupService;
  provisioningKeys: ProvisioningKeyService;
  connectors: ConnectorService;
  enrollment: EnrollmentService;
  apiKeys: ApiKeyService;
  signingKeys: SigningKeyService;
  /** What is recorded of agent sessions, and their identities' renewal. */
  agentSessions: AgentSessionService;
  /** Who may open an agent session, and keep it while its connector changes. */
  handshakes: HandshakeChecks;
  audit: AuditLog;
  limiter: AbuseLimiter;
  /** Changes as they are applied and as they are committed (see EventMoment). */
  events: DomainEvents;
  /** The deployment's server processes (`replicas.list`). */
  replicas: ReplicaService;
}
