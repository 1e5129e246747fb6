import { createHash, type Hash } from 'node:crypto';
import type { StoreData } from '../store/records.js';

/**
 * A backup file, `connector-server-backup` version 1: JSON lines, so it is written and read a
 * record at a time.
 *
 *   {"format":"connector-server-backup","version":1,"snapshotAt":"…","source":"online|offline"}
 *   {"kind":"secret","value":"<base64 of secret.key>"}
 *   {"kind":"signingKeys","value":{…signing-keys.json…}}
 *   {"kind":"adminKey","value":"cak_…"}                      (when admin.key existed)
 *   {"kind":"record","section":"groups|provisioningKeys|connectors|apiKeys","value":{…}}   (one per record)
 *   {"kind":"end","records":N,"sha256":"<hex of every byte before this line>"}
 *
 * The last line's SHA-256 detects a torn (truncated) or accidentally damaged file. It is not a
 * signature: whoever can write the file can recompute it.
 */
export const BACKUP_FORMAT = 'connector-server-backup';
export const BACKUP_VERSION = 1;

export type Section = 'groups' | 'provisioningKeys' | 'connectors' | 'apiKeys';
export const SECTIONS: readonly Section[] = ['groups', 'provisioningKeys', 'connectors', 'apiKeys'];

export interface SigningKeyFileContent {
  keys: object[];
}

/** What a backup holds: the state of a data dir at one instant. */
export interface BackupContents {
  /** Epoch ms of the instant the state was taken. */
  snapshotAt: number;
  source: 'online' | 'offline';
  /** The 32-byte secret that encrypts stored provisioning keys (`secret.key`). */
  secret: Buffer;
  signingKeys: SigningKeyFileContent;
  /** The bootstrap admin key file's content, if the data dir had one. */
  adminKey: string | null;
  store: StoreData;
}

/** The backup cannot be used; the message says why in one line, naming the file. */
export class BackupFileError extends Error {
  override readonly name = 'BackupFileError';
}

/** Builds a backup's bytes line by line, hashing them as they go; `end()` gives the last line. */
export class BackupWriter {
  private readonly hash: Hash = createHash('sha256');
  private records = 0;
  bytes = 0;

  header(snapshotAt: number, source: BackupContents['source']): string {
    return this.line({
      format: BACKUP_FORMAT,
      version: BACKUP_VERSION,
      snapshotAt: new Date(snapshotAt).toISOString(),
      source,
    });
  }

  secret(secret: Buffer): string {
    return this.line({ kind: 'secret', value: secret.toString('base64') });
  }

  signingKeys(content: SigningKeyFileContent): string {
    return this.line({ kind: 'signingKeys', value: content });
  }

  adminKey(key: string): string {
    return this.line({ kind: 'adminKey', value: key });
  }

  record(section: Section, value: unknown): string {
    this.records++;
    return this.line({ kind: 'record', section, value });
  }

  /** The closing line, with the SHA-256 of every line before it. */
  end(): { line: string; sha256: string } {
    const sha256 = this.hash.digest('hex');
    const line = `${JSON.stringify({ kind: 'end', records: this.records, sha256 })}\n`;
    this.bytes += Buffer.byteLength(line);
    return { line, sha256 };
  }

  private line(value: unknown): string {
    const text = `${JSON.stringify(value)}\n`;
    this.hash.update(text);
    this.bytes += Buffer.byteLength(text);
    return text;
  }
}

/** The whole file at once (offline backups; tests). */
export function encodeBackup(contents: BackupContents): string {
  const w = new BackupWriter();
  const parts = [w.header(contents.snapshotAt, contents.source), w.secret(contents.secret)];
  parts.push(w.signingKeys(contents.signingKeys));
  if (contents.adminKey !== null) parts.push(w.adminKey(contents.adminKey));
  for (const section of SECTIONS) {
    for (const record of Object.values(contents.store[section])) parts.push(w.record(section, record));
  }
  parts.push(w.end().line);
  return parts.join('');
}

/**
 * Checks and reads a backup: its header (format and version), its end line (a torn file has none)
 * and its SHA-256, then every line. Throws BackupFileError with a one-line reason.
 */
export function decodeBackup(bytes: Buffer, name: string): BackupContents {
  const bad = (problem: string) => new BackupFileError(`${name}: ${problem}`);
  const firstEnd = bytes.indexOf(0x0a);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(bytes.subarray(0, firstEnd === -1 ? bytes.length : firstEnd).toString('utf8'));
  } catch {
    throw bad(`is not a ${BACKUP_FORMAT} file (its first line is not its header)`);
  }
  if (header?.format !== BACKUP_FORMAT) throw bad(`is not a ${BACKUP_FORMAT} file`);
  if (header.version !== BACKUP_VERSION)
    throw bad(
      `is a ${BACKUP_FORMAT} of version ${String(header.version)}; this server reads version ${BACKUP_VERSION}`,
    );
  const torn = bad('is incomplete (torn or truncated: its end line is missing); use another backup');
  if (bytes.length === 0 || bytes[bytes.length - 1] !== 0x0a) throw torn;
  const lastStart = bytes.lastIndexOf(0x0a, bytes.length - 2) + 1;
  let end: { kind?: unknown; records?: unknown; sha256?: unknown };
  try {
    end = JSON.parse(bytes.subarray(lastStart).toString('utf8'));
  } catch {
    throw torn;
  }
  if (end?.kind !== 'end' || typeof end.sha256 !== 'string') throw torn;
  const actual = createHash('sha256').update(bytes.subarray(0, lastStart)).digest('hex');
  if (actual !== end.sha256)
    throw bad('does not match its checksum (damaged or altered); use another backup');

  const snapshotAt = Date.parse(String(header.snapshotAt));
  if (!Number.isFinite(snapshotAt)) throw bad('has no valid snapshotAt in its header');
  const store: StoreData = {
    schemaVersion: 1,
    groups: {},
    provisioningKeys: {},
    connectors: {},
    apiKeys: {},
  };
  let secret: Buffer | null = null;
  let signingKeys: SigningKeyFileContent | null = null;
  let adminKey: string | null = null;
  let records = 0;
  const lines = bytes
    .subarray(firstEnd + 1, lastStart)
    .toString('utf8')
    .split('\n');
  lines.pop();
  for (const [index, text] of lines.entries()) {
    let line: { kind?: string; section?: Section; value?: unknown };
    try {
      line = JSON.parse(text);
    } catch {
      throw bad(`line ${index + 2} is not JSON`);
    }
    if (line.kind === 'secret' && typeof line.value === 'string') secret = Buffer.from(line.value, 'base64');
    else if (line.kind === 'signingKeys' && Array.isArray((line.value as SigningKeyFileContent)?.keys))
      signingKeys = line.value as SigningKeyFileContent;
    else if (line.kind === 'adminKey' && typeof line.value === 'string') adminKey = line.value;
    else if (
      line.kind === 'record' &&
      SECTIONS.includes(line.section as Section) &&
      typeof (line.value as { id?: unknown })?.id === 'string'
    ) {
      const record = line.value as { id: string };
      (store[line.section as Section] as Record<string, unknown>)[record.id] = record;
      records++;
    } else throw bad(`line ${index + 2} is not a part this version knows`);
  }
  if (secret === null || secret.length !== 32) throw bad('holds no valid 32-byte secret');
  if (!signingKeys || signingKeys.keys.length === 0) throw bad('holds no signing keys');
  if (end.records !== records) throw bad(`says ${String(end.records)} records but holds ${records}`);
  return {
    snapshotAt,
    source: header.source === 'offline' ? 'offline' : 'online',
    secret,
    signingKeys,
    adminKey,
    store,
  };
}
