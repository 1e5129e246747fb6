import { DomainError } from '../../shared/errors.js';
import { PROVISIONING_KEY_PREFIX } from '../../shared/protocol.js';
import type { ProvisioningKeyRecord } from '../store/records.js';
import type { StoreTransaction, StoreView } from '../store/store.js';
import type { RequestMeta, ServiceDeps } from './deps.js';
import { onceSaved, savedLate } from './once-saved.js';
import { generateKey } from './secrets.js';

export const provisioningKeyName = (groupName: string) => `Connector Provisioning Key - ${groupName}`;

/** A new key's policy. Unset: no use limit, and the server's --key-ttl. */
export interface KeyPolicy {
  maxUses?: number | null | undefined;
  ttlMs?: number | undefined;
}

export type KeyState = 'active' | 'expired' | 'exhausted';

/** Whether a key may enroll now; a key both expired and used up reads expired (time ends it for good). */
export function keyState(record: ProvisioningKeyRecord, now: number): KeyState {
  if (now >= record.expiresAt) return 'expired';
  const maxUses = record.maxUses ?? null;
  if (maxUses !== null && (record.uses ?? 0) >= maxUses) return 'exhausted';
  return 'active';
}

/** The policy a key was made with, to give its successor when a revoke regenerates it. */
export function policyOf(record: ProvisioningKeyRecord): KeyPolicy {
  return { maxUses: record.maxUses ?? null, ttlMs: record.expiresAt - record.createdAt };
}

/**
 * Makes a new current key for a group inside a transaction and supersedes the old one. Returns the
 * key in clear: it is shown to the admin who asked and otherwise only stored hashed and encrypted.
 */
export function rotateGroupKey(
  tx: StoreTransaction,
  deps: Pick<ServiceDeps, 'secretBox' | 'policy'>,
  groupId: string,
  now: number,
  policy: KeyPolicy = {},
): ProvisioningKeyRecord {
  const group = tx.get('groups', groupId);
  if (!group) throw new TypeError(`rotateGroupKey: no group ${groupId}`);
  const { id, key, hash } = generateKey(PROVISIONING_KEY_PREFIX, 'pk');
  const record: ProvisioningKeyRecord = {
    id,
    groupId,
    hash,
    encrypted: deps.secretBox.seal(key, id),
    createdAt: now,
    expiresAt: now + (policy.ttlMs ?? deps.policy.keyTtlMs),
    supersededAt: null,
    lastUsedAt: null,
    maxUses: policy.maxUses ?? null,
    uses: 0,
  };
  if (tx.get('provisioningKeys', group.currentKeyId))
    tx.patch('provisioningKeys', group.currentKeyId, { supersededAt: now });
  tx.put('provisioningKeys', record);
  tx.patch('groups', groupId, { currentKeyId: id });
  return record;
}

/** `cpk_••••••••3f9a`: enough to tell keys apart, nothing to enroll with. */
export function maskKey(key: string): string {
  return `${PROVISIONING_KEY_PREFIX}${'•'.repeat(8)}${key.slice(-4)}`;
}

/** What ProvisioningKeyService is built from. */
export type ProvisioningKeyServiceDeps = Pick<
  ServiceDeps,
  'store' | 'audit' | 'clock' | 'secretBox' | 'policy' | 'logger'
>;

export class ProvisioningKeyService {
  constructor(private readonly deps: ProvisioningKeyServiceDeps) {}

  /** The group's current key: in clear while active, `key: null` once expired or used up. */
  get(groupId: string) {
    return this.deps.store.read((view) => this.view(view, groupId));
  }

  /** Replaces the group's key with one of the given policy; the old key is refused from now on. */
  async regenerate(groupId: string, policy: KeyPolicy, meta: RequestMeta) {
    const now = this.deps.clock.now();
    const durable = this.deps.store.transact((tx) => {
      const group = tx.get('groups', groupId);
      if (!group) throw new DomainError('GROUP_NOT_FOUND');
      const previousKeyId = group.currentKeyId;
      const record = rotateGroupKey(tx, this.deps, groupId, now, policy);
      return { view: this.view(tx, groupId), previousKeyId, record };
    });
    const result = await onceSaved(
      durable,
      ({ record, previousKeyId }, late) =>
        this.deps.audit.record({
          type: 'provisioning_key.regenerated',
          ...meta,
          groupId,
          keyId: record.id,
          details: {
            previousKeyId,
            maxUses: record.maxUses ?? null,
            ttlMs: record.expiresAt - record.createdAt,
            expiresAt: new Date(record.expiresAt).toISOString(),
            ...savedLate(late),
          },
        }),
      this.deps.logger,
    );
    return result.view;
  }

  private view(view: StoreView, groupId: string) {
    const group = view.get('groups', groupId);
    const record = group ? view.get('provisioningKeys', group.currentKeyId) : undefined;
    if (!group || !record) throw new DomainError('GROUP_NOT_FOUND');
    const status = keyState(record, this.deps.clock.now());
    let enrollments = 0;
    for (const connector of view.list('connectors')) {
      if (connector.enrolledWithKeyId === record.id) enrollments++;
    }
    const key = status === 'active' ? this.deps.secretBox.open(record.encrypted, record.id) : null;
    return {
      keyId: record.id,
      groupId,
      name: provisioningKeyName(group.name),
      key,
      /** The key with all but its last 4 characters hidden: what a read-scoped caller sees. */
      keyMasked: key === null ? null : maskKey(key),
      status,
      /** A disabled group's key is current but enrolls nobody until the group is enabled. */
      groupStatus: group.status,
      createdAt: new Date(record.createdAt).toISOString(),
      expiresAt: new Date(record.expiresAt).toISOString(),
      enrollments,
      uses: record.uses ?? 0,
      maxUses: record.maxUses ?? null,
    };
  }
}
