import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { StoredSigningKey } from '../services/signing-key-records.js';
import type { AuditEvent } from '../store/audit-records.js';
import type { BackupContents } from './format.js';

// A signing key rotated in after a backup is not in it: restored alone, every identity that key
// signed since would be refused (IDENTITY_UNKNOWN_SIGNER) and its agent would retry for ever.
// Restored over its own data dir (--force), the dir still has that key: it is kept.

/**
 * The keys of the data dir restored over that the backup lacks, when the dir is the backup's own
 * deployment (the same secret: another deployment's keys must never be trusted). Read before the
 * restore replaces the dir's files; none when the dir has no readable keys or secret.
 */
export async function signingKeysMadeSince(
  secretFile: string,
  signingKeysFile: string,
  contents: BackupContents,
): Promise<StoredSigningKey[]> {
  try {
    const secret = Buffer.from((await readFile(secretFile, 'utf8')).trim(), 'base64');
    if (secret.length !== contents.secret.length || !timingSafeEqual(secret, contents.secret)) return [];
    const file = JSON.parse(await readFile(signingKeysFile, 'utf8')) as { keys?: unknown };
    if (!Array.isArray(file.keys)) return [];
    const inBackup = new Set((contents.signingKeys.keys as StoredSigningKey[]).map((k) => k.kid));
    return (file.keys as StoredSigningKey[]).filter(
      (k) => typeof k?.kid === 'string' && typeof k.privateJwk === 'object' && !inBackup.has(k.kid),
    );
  } catch {
    return []; // no dir of its own to take them from: signingKeysStillMissing says so
  }
}

/** The kids the log says were rotated in after the snapshot that the restored keys still lack. */
export function signingKeysStillMissing(contents: BackupContents, events: readonly AuditEvent[]): string[] {
  const have = new Set((contents.signingKeys.keys as StoredSigningKey[]).map((k) => k.kid));
  const missing = new Set<string>();
  for (const event of events) {
    if (event.type !== 'signing_key.rotated' || event.outcome !== 'success' || !event.keyId) continue;
    if (Date.parse(event.at) >= contents.snapshotAt && !have.has(event.keyId)) missing.add(event.keyId);
  }
  return [...missing];
}
