import { DomainError } from '../../shared/errors.js';
import { PROVISIONING_KEY_PREFIX } from '../../shared/protocol.js';
import type { ProvisioningKeyRecord, StoreData } from '../store/records.js';
import type { RequestMeta, ServiceDeps } from './deps.js';
import { generateKey } from './secrets.js';

export const provisioningKeyName = (groupName: string) => `Connector Provisioning Key - ${groupName}`;

/**
 * Makes a new current key for a group inside a transaction and supersedes the old one. Returns the
 * key in clear: it is shown to the admin who asked and otherwise only stored hashed and encrypted.
 */
export function rotateGroupKey(
  data: StoreData,
  deps: Pick<ServiceDeps, 'secretBox' | 'policy'>,
  groupId: string,
  now: number,
): ProvisioningKeyRecord {
  const group = data.groups[groupId];
  if (!group) throw new TypeError(`rotateGroupKey: no group ${groupId}`);
  const { id, key, hash } = generateKey(PROVISIONING_KEY_PREFIX, 'pk');
  const record: ProvisioningKeyRecord = {
    id,
    groupId,
    hash,
    encrypted: deps.secretBox.seal(key, id),
    createdAt: now,
    expiresAt: now + deps.policy.keyTtlMs,
    supersededAt: null,
    lastUsedAt: null,
  };
  const previous = data.provisioningKeys[group.currentKeyId];
  if (previous) previous.supersededAt = now;
  data.provisioningKeys[id] = record;
  group.currentKeyId = id;
  return record;
}

/** `cpk_••••••••3f9a`: enough to tell keys apart, nothing to enroll with. */
export function maskKey(key: string): string {
  return `${PROVISIONING_KEY_PREFIX}${'•'.repeat(8)}${key.slice(-4)}`;
}

export class ProvisioningKeyService {
  constructor(private readonly deps: ServiceDeps) {}

  /** The group's current key: in clear while active, `key: null` once expired. */
  get(groupId: string) {
    return this.deps.store.read((data) => this.view(data, groupId));
  }

  async regenerate(groupId: string, meta: RequestMeta) {
    const now = this.deps.clock.now();
    const result = await this.deps.store.transact((data) => {
      if (!data.groups[groupId]) throw new DomainError('GROUP_NOT_FOUND');
      const previousKeyId = data.groups[groupId].currentKeyId;
      const record = rotateGroupKey(data, this.deps, groupId, now);
      return { view: this.view(data, groupId), previousKeyId, keyId: record.id };
    });
    await this.deps.audit.record({
      type: 'provisioning_key.regenerated',
      ...meta,
      groupId,
      keyId: result.keyId,
      details: { previousKeyId: result.previousKeyId },
    });
    return result.view;
  }

  private view(data: Readonly<StoreData>, groupId: string) {
    const group = data.groups[groupId];
    const record = group ? data.provisioningKeys[group.currentKeyId] : undefined;
    if (!group || !record) throw new DomainError('GROUP_NOT_FOUND');
    const active = this.deps.clock.now() < record.expiresAt;
    let enrollments = 0;
    for (const connector of Object.values(data.connectors)) {
      if (connector.enrolledWithKeyId === record.id) enrollments++;
    }
    const key = active ? this.deps.secretBox.open(record.encrypted, record.id) : null;
    return {
      keyId: record.id,
      groupId,
      name: provisioningKeyName(group.name),
      key,
      /** The key with all but its last 4 characters hidden: what a read-scoped caller sees. */
      keyMasked: key === null ? null : maskKey(key),
      status: active ? ('active' as const) : ('expired' as const),
      createdAt: new Date(record.createdAt).toISOString(),
      expiresAt: new Date(record.expiresAt).toISOString(),
      enrollments,
    };
  }
}
