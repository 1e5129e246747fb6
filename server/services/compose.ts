import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { createMetrics, type Metrics } from '../metrics.js';
import { SessionHub } from '../sessions/hub.js';
import type { Store } from '../store/store.js';
import { ApiKeyService } from './api-keys.js';
import type { AuditLog } from './audit.js';
import { ConnectorService } from './connectors.js';
import type { Policy, ServiceDeps } from './deps.js';
import { EnrollmentService } from './enrollment.js';
import { DomainEvents } from './events.js';
import { GroupService } from './groups.js';
import type { IdentityAuthority } from './identity.js';
import { ProvisioningKeyService } from './provisioning-keys.js';
import { AbuseLimiter, type RateLimits } from './rate-limit.js';
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
  metrics?: Metrics;
}

/** Builds every service and the session hub over the given capabilities (real or in-memory). */
export function createServices(
  capabilities: Capabilities,
  config: Policy & {
    rateLimits: RateLimits;
    maxSessionsPerAddress?: number;
    sessionsPerTurn?: number;
    handshakeTimeoutMs?: number;
    rotationSpreadMs?: number;
  },
): { services: Services; metrics: Metrics } {
  const metrics = capabilities.metrics ?? createMetrics();
  const events = new DomainEvents();
  const policy: Policy = {
    keyTtlMs: config.keyTtlMs,
    identityTtlMs: config.identityTtlMs,
    pendingTtlMs: config.pendingTtlMs,
  };
  const presence = {
    isConnected: (id: string) => hub.isConnected(id),
    termination: (id: string) => hub.termination(id),
  };
  const unsavedTerminations = new UnsavedTerminations();
  const deps: ServiceDeps = { ...capabilities, events, presence, policy, metrics, unsavedTerminations };
  const connectors = new ConnectorService(deps);
  const hub: SessionHub = new SessionHub({
    ...capabilities,
    connectors,
    events,
    policy,
    metrics,
    maxSessionsPerAddress: config.maxSessionsPerAddress,
    sessionsPerTurn: config.sessionsPerTurn,
    subscribeTimeoutMs: config.handshakeTimeoutMs,
    rotationSpreadMs: config.rotationSpreadMs,
  });
  return {
    metrics,
    services: {
      groups: new GroupService(deps),
      provisioningKeys: new ProvisioningKeyService(deps),
      connectors,
      enrollment: new EnrollmentService(deps),
      apiKeys: new ApiKeyService(deps),
      signingKeys: new SigningKeyService(deps),
      audit: capabilities.audit,
      hub,
      limiter: new AbuseLimiter(config.rateLimits, capabilities.audit, metrics),
      events,
    },
  };
}

/** What the routers and the HTTP layer are given: the services, the session hub, the event bus. */
export interface Services {
  groups: GroupService;
  provisioningKeys: ProvisioningKeyService;
  connectors: ConnectorService;
  enrollment: EnrollmentService;
  apiKeys: ApiKeyService;
  signingKeys: SigningKeyService;
  audit: AuditLog;
  hub: SessionHub;
  limiter: AbuseLimiter;
  /** Changes as they are applied and as they are committed (see EventMoment). */
  events: DomainEvents;
}
