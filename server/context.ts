import type { IncomingMessage } from 'node:http';
import type { ErrorReason } from '../shared/errors.js';
import type { ApiKeyService } from './services/api-keys.js';
import type { AuditLog } from './services/audit.js';
import type { ConnectorService } from './services/connectors.js';
import type { EnrollmentService } from './services/enrollment.js';
import type { DomainEvents } from './services/events.js';
import type { GroupService } from './services/groups.js';
import type { ProvisioningKeyService } from './services/provisioning-keys.js';
import type { AbuseLimiter } from './services/rate-limit.js';
import type { SigningKeyService } from './services/signing-keys.js';
import type { AgentSession, SessionHub } from './sessions/hub.js';

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

/** One context for HTTP and websocket calls; `agent` is set only on an authenticated websocket. */
export interface Context {
  services: Services;
  remoteAddress: string;
  bearerToken: string | null;
  agent: AgentSession | null;
  agentRefusal: ErrorReason | null;
}

export function remoteAddressOf(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export function bearerTokenOf(req: IncomingMessage): string | null {
  const header = req.headers.authorization;
  if (!header) return null;
  const match = /^Bearer\s+(\S{1,300})$/i.exec(header);
  return match?.[1] ?? null;
}
