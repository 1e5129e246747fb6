import type { AuditEvent } from '../services/audit.js';
import type { Policy } from '../services/deps.js';
import { newSigningKey, type StoredSigningKey } from '../services/identity.js';
import { rotateGroupKey } from '../services/provisioning-keys.js';
import { SecretBox } from '../services/secrets.js';
import { Transaction } from '../store/record-tables.js';
import type { BackupContents } from './format.js';

/** What a restore changed in the backup's state to match the audit log after the snapshot. */
export interface ReplayCounts {
  connectorsRevoked: number;
  /** Revocations their host confirmed after the snapshot (pending in it): confirmed again. */
  revocationsConfirmed: number;
  connectorsDeleted: number;
  groupsDeleted: number;
  apiKeysDeleted: number;
  /** Provisioning keys replaced after the snapshot (by a regeneration or a revoke): given a new one. */
  provisioningKeysReplaced: number;
  signingKeysRetired: number;
}

export const totalReplayed = (c: ReplayCounts) =>
  c.connectorsRevoked +
  c.revocationsConfirmed +
  c.connectorsDeleted +
  c.groupsDeleted +
  c.apiKeysDeleted +
  c.provisioningKeysReplaced +
  c.signingKeysRetired;

/**
 * Brings the backup's state forward over what the audit log recorded at or after its snapshot, so
 * that a restore never brings back what was revoked, deleted, replaced or retired since: revoked
 * connectors are revoked again (and read confirmed when their host confirmed it since), deleted connectors, groups and admin keys deleted again, a
 * provisioning key replaced since is replaced by a new one (its successor's secret is not in the log,
 * and the old one must not enroll again), a signing key retired since loses its private half.
 * Every step is idempotent: an event whose change the snapshot already holds changes nothing and is
 * not counted. An event is written after its change, so any change the snapshot lacks has an event
 * at or after `snapshotAt`. Returns what it changed. Mutates `contents`.
 *
 * Not replayed (nothing to take back): creations, enables and disables, renames; those made after
 * the backup are lost with it. A signing key rotated in after the backup is not in it: the restore
 * takes it from the dir it restores over when it can (signing-keys-since.ts), else warns.
 */
export async function replayAfterSnapshot(
  contents: BackupContents,
  events: readonly AuditEvent[],
  policy: Policy,
  /** Told of each event that changed the restored state (the restore records them again). */
  onApplied: (event: AuditEvent) => void = () => {},
): Promise<ReplayCounts> {
  const counts: ReplayCounts = {
    connectorsRevoked: 0,
    revocationsConfirmed: 0,
    connectorsDeleted: 0,
    groupsDeleted: 0,
    apiKeysDeleted: 0,
    provisioningKeysReplaced: 0,
    signingKeysRetired: 0,
  };
  // The same explicit changes as the live store's, straight over the backup's state (no journal).
  const data = new Transaction(contents.store, () => {});
  const secretBox = new SecretBox(contents.secret);
  for (const event of events) {
    const at = Date.parse(event.at);
    if (!(at >= contents.snapshotAt) || event.outcome !== 'success') continue;
    const before = totalReplayed(counts);
    const connector = event.connectorId ? data.get('connectors', event.connectorId) : undefined;
    switch (event.type) {
      case 'connector.revoked':
        if (connector && connector.status !== 'revoked') {
          data.patch('connectors', connector.id, {
            status: 'revoked',
            revokedAt: at,
            revokeReason: (event.details.reason as string | null | undefined) ?? null,
            revocationConfirmedAt: null,
            revocationConfirmedFrom: null,
          });
          counts.connectorsRevoked++;
        }
        break;
      case 'connector.revocation_confirmed': {
        // As the server showed it: when and from where the host heard (recorded in the event).
        const confirmedAt = Date.parse(String(event.details.confirmedAt));
        if (connector?.status === 'revoked' && (connector.revocationConfirmedAt ?? null) === null) {
          data.patch('connectors', connector.id, {
            revocationConfirmedAt: Number.isNaN(confirmedAt) ? at : confirmedAt,
            revocationConfirmedFrom: event.remoteAddress,
          });
          counts.revocationsConfirmed++;
        }
        break;
      }
      case 'connector.deleted':
      case 'connector.pending_expired':
        if (connector) {
          data.delete('connectors', connector.id);
          counts.connectorsDeleted++;
        }
        break;
      case 'group.deleted': {
        const groupId = event.groupId;
        if (!groupId || !data.get('groups', groupId)) break;
        for (const c of data.list('connectors')) if (c.groupId === groupId) data.delete('connectors', c.id);
        for (const k of data.list('provisioningKeys'))
          if (k.groupId === groupId) data.delete('provisioningKeys', k.id);
        data.delete('groups', groupId);
        counts.groupsDeleted++;
        break;
      }
      case 'api_key.deleted':
        if (event.keyId && data.delete('apiKeys', event.keyId)) {
          counts.apiKeysDeleted++;
        }
        break;
      case 'signing_key.retired':
        if (event.keyId && retireSigningKey(contents.signingKeys.keys as StoredSigningKey[], event.keyId, at))
          counts.signingKeysRetired++;
        break;
    }
    // A revoke replaces its group's key too (details.previousKeyId), so does a regeneration.
    const previousKeyId = event.details?.previousKeyId;
    if (
      (event.type === 'connector.revoked' || event.type === 'provisioning_key.regenerated') &&
      typeof previousKeyId === 'string' &&
      event.groupId &&
      data.get('groups', event.groupId)?.currentKeyId === previousKeyId
    ) {
      rotateGroupKey(data, { secretBox, policy }, event.groupId, at);
      counts.provisioningKeysReplaced++;
    }
    if (totalReplayed(counts) > before) onApplied(event);
  }
  if (
    counts.signingKeysRetired > 0 &&
    !hasSigner(contents.signingKeys.keys as StoredSigningKey[], Date.now())
  ) {
    // The key that signed since is not in the backup: a new one, so the server can start.
    const now = Date.now();
    contents.signingKeys.keys.push(await newSigningKey(now, now));
  }
  return counts;
}

function retireSigningKey(keys: StoredSigningKey[], kid: string, at: number): boolean {
  const index = keys.findIndex((k) => k.kid === kid);
  const key = keys[index];
  if (!key || key.retiredAt) return false;
  const { d: _private, ...publicHalf } = key.privateJwk;
  keys[index] = { ...key, retiredAt: new Date(at).toISOString(), privateJwk: publicHalf };
  return true;
}

function hasSigner(keys: StoredSigningKey[], now: number): boolean {
  return keys.some((k) => {
    if (k.retiredAt || !k.privateJwk.d) return false;
    const activateAt =
      k.activateAt === undefined ? (k.active ? Date.parse(k.createdAt) : null) : k.activateAt;
    const ms = typeof activateAt === 'string' ? Date.parse(activateAt) : activateAt;
    return ms !== null && ms <= now;
  });
}
