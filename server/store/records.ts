import type { HostFacts } from '../../shared/schemas.js';

/** What the data file holds. Dates are epoch milliseconds; the API turns them into ISO strings. */
export interface StoreData {
  schemaVersion: 1;
  groups: Record<string, GroupRecord>;
  provisioningKeys: Record<string, ProvisioningKeyRecord>;
  connectors: Record<string, ConnectorRecord>;
  apiKeys: Record<string, ApiKeyRecord>;
}

export interface GroupRecord {
  id: string;
  name: string;
  description: string;
  status: 'enabled' | 'disabled';
  createdAt: number;
  /** The id of the group's one current provisioning key. */
  currentKeyId: string;
}

export interface ProvisioningKeyRecord {
  id: string;
  groupId: string;
  /** SHA-256 of the whole key, hex. */
  hash: string;
  /** AES-256-GCM of the key under the server secret: iv.tag.ciphertext, base64url. */
  encrypted: string;
  createdAt: number;
  expiresAt: number;
  /** Set when a newer key replaced this one; such keys are kept to answer KEY_SUPERSEDED. */
  supersededAt: number | null;
  lastUsedAt: number | null;
  /** Enrollments it may make; null or absent (records from before the limit existed): no limit. */
  maxUses?: number | null;
  /** Enrollments it has made, deleted connectors included (absent in records from before: 0). */
  uses?: number;
}

export interface ConnectorRecord {
  id: string;
  groupId: string;
  name: string;
  status: 'enabled' | 'disabled' | 'revoked';
  enrolledAt: number;
  enrolledWithKeyId: string;
  /** RFC 7638 thumbprint of the agent's public key (the identity's cnf.jkt). */
  keyThumbprint: string;
  agentVersion: string;
  host: HostFacts;
  remoteAddress: string;
  lastConnectedAt: number | null;
  lastSeenAt: number | null;
  /** When a session of this identity last replaced a live one (absent in records from before). */
  lastReplacedAt?: number | null;
  /** The address of the session it replaced then. */
  replacedFrom?: string | null;
  identity: { issuedAt: number; expiresAt: number; keyId: string };
  revokedAt: number | null;
  revokeReason: string | null;
  /**
   * When the host learnt of the revocation: its agent acknowledged it over the live session, or its
   * identity was refused at a later handshake (absent in records from before; null: not yet).
   */
  revocationConfirmedAt?: number | null;
  /** The address it learnt it from. */
  revocationConfirmedFrom?: string | null;
}

export interface ApiKeyRecord {
  id: string;
  name: string;
  scope: 'read' | 'admin';
  hash: string;
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
}

export function emptyData(): StoreData {
  return { schemaVersion: 1, groups: {}, provisioningKeys: {}, connectors: {}, apiKeys: {} };
}
