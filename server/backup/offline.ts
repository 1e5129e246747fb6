import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDir, syncDir, writeFileDurably } from '../../shared/private-files.js';
import { systemClock } from '../clock.js';
import { REPLICA_MARKER, replicaDatabaseOf } from '../replica-marker.js';
import { defaultConfig } from '../server-config.js';
import { type AuditEvent, FileAuditLog } from '../services/audit.js';
import { holdKey, type StoredSigningKey } from '../services/signing-key-records.js';
import { LOCK_FILE_NAME, lockDataDir } from '../store/data-dir-lock.js';
import { journalFileOf, loadStoreFiles } from '../store/journal.js';
import { storeProblem } from '../store/record-check.js';
import { readAuditEventsOf } from './audit-events.js';
import { type BackupContents, BackupFileError, decodeBackup, encodeBackup } from './format.js';
import { type ReplayCounts, replayAfterSnapshot } from './replay.js';
import { signingKeysMadeSince, signingKeysStillMissing } from './signing-keys-since.js';

/** The files of a data dir that a backup holds (the audit log is history, not state: not in it). */
export const DATA_FILES = {
  store: 'store.json',
  signingKeys: 'signing-keys.json',
  secret: 'secret.key',
  adminKey: 'admin.key',
  audit: 'audit.jsonl',
} as const;

/** What was written: the file's own SHA-256 (as `sha256sum` prints it) and what it holds. */
export interface BackupResult {
  file: string;
  sha256: string;
  bytes: number;
  snapshotAt: number;
  connectors: number;
}

/** The data dir cannot take a restore as asked (not empty without --force). */
export class RestoreRefusedError extends Error {
  override readonly name = 'RestoreRefusedError';
}

/** What a data dir holds now, read under its lock (the server is stopped): store with its journal folded in. */
async function readDataDir(dir: string): Promise<BackupContents> {
  const path = (name: string) => join(dir, name);
  const store = loadStoreFiles(path(DATA_FILES.store));
  if (!store)
    throw new BackupFileError(
      `${dir} holds no ${DATA_FILES.store}: nothing to back up (a server run with --database-url keeps its state in PostgreSQL: back that up with pg_dump)`,
    );
  const secret = Buffer.from((await readFile(path(DATA_FILES.secret), 'utf8')).trim(), 'base64');
  const signingKeys = JSON.parse(await readFile(path(DATA_FILES.signingKeys), 'utf8'));
  const adminKey = await readFile(path(DATA_FILES.adminKey), 'utf8').catch(() => null);
  return { snapshotAt: Date.now(), source: 'offline', secret, signingKeys, adminKey, store };
}

/** A backup of a stopped server's data dir, written to `out` (0600, durably). Refused while a server holds the dir. */
export async function offlineBackup(dataDir: string, out: string): Promise<BackupResult> {
  const info = await stat(dataDir).catch(() => null);
  if (!info?.isDirectory())
    throw new BackupFileError(`data dir ${dataDir} does not exist or is not a directory`);
  // Before the lock: a running replica holds it, and the online backup it would advise is refused too.
  const database = replicaDatabaseOf(dataDir);
  if (database !== null)
    throw new BackupFileError(
      `data dir ${dataDir} is a replica's: its state is in the PostgreSQL database at ${database}; back that up with pg_dump (README, "Back up and restore replicas")`,
    );
  const lock = await lockDataDir(dataDir);
  let text: string;
  let contents: BackupContents;
  try {
    contents = await readDataDir(dataDir);
    text = encodeBackup(contents);
  } finally {
    await lock.release();
  }
  await writeFileDurably(out, text);
  return {
    file: out,
    sha256: createHash('sha256').update(text).digest('hex'),
    bytes: Buffer.byteLength(text),
    snapshotAt: contents.snapshotAt,
    connectors: Object.keys(contents.store.connectors).length,
  };
}

export interface RestoreOptions {
  from: string;
  dataDir: string;
  force: boolean;
  /** The audit log to replay; default: the one in the data dir, if any. */
  auditFile?: string | undefined;
}

export interface RestoreResult {
  snapshotAt: number;
  connectors: number;
  /** The audit files read for the replay; none: nothing was replayed. */
  auditFiles: string[];
  /**
   * When the audit log given starts after the snapshot (rotated past it): its first event. What
   * was revoked or deleted between the two cannot be replayed. Null when the log reaches back.
   */
  auditGapFrom: string | null;
  replayed: ReplayCounts;
  /** Signing keys made after the backup, kept from the dir restored over (its own deployment's). */
  signingKeysKept: string[];
  /** Signing keys the log says were made after the backup and that neither it nor the dir had. */
  signingKeysMissing: string[];
}

/**
 * Restores a backup into `dataDir`: checks the file whole first (nothing is written for a torn,
 * altered or foreign file), takes the dir's lock, refuses a dir that holds anything unless `force`,
 * replays what the audit log recorded after the snapshot, then writes the store (and an empty
 * journal), the signing keys, the secret and the admin key, each 0600 and durably. The dir's audit
 * log is kept (it is history) and told of the restore (`backup.restored`).
 */
export async function restoreBackup(options: RestoreOptions): Promise<RestoreResult> {
  // A log named on the command line must be there: a typo would replay nothing, and say nothing.
  // Checked before anything is touched (the data dir is not even made).
  if (options.auditFile !== undefined && !existsSync(options.auditFile))
    throw new RestoreRefusedError(
      `--audit-file ${options.auditFile} does not exist: give the old server's audit.jsonl (its rotated audit.jsonl.N beside it are read too), or leave --audit-file out`,
    );
  let bytes: Buffer;
  try {
    bytes = await readFile(options.from);
  } catch (error) {
    throw new BackupFileError(unreadableBackup(options.from, error as NodeJS.ErrnoException));
  }
  const contents = decodeBackup(bytes, options.from);
  // What the server would then fail to serve (every list answering INTERNAL_ERROR) or to start with.
  const problem = storeProblem(contents.store);
  if (problem)
    throw new BackupFileError(`${options.from}: holds a record this server cannot use: ${problem}`);
  // Read as the server will read them: a damaged key would otherwise restore "successfully" and
  // then stop the server at start.
  await Promise.all(contents.signingKeys.keys.map((key) => holdKey(key as StoredSigningKey))).catch(
    (error: Error) => {
      throw new BackupFileError(
        `${options.from}: holds a damaged signing key (${error.message}); use another backup`,
      );
    },
  );
  const dir = options.dataDir;
  await ensurePrivateDir(dir, { what: 'data dir', flag: '--data-dir' });
  const lock = await lockDataDir(dir);
  try {
    const present = (await readdir(dir)).filter((name) => name !== LOCK_FILE_NAME);
    if (present.length > 0 && !options.force) {
      throw new RestoreRefusedError(
        `data dir ${dir} is not empty (${present.slice(0, 4).join(', ')}${present.length > 4 ? ', …' : ''}): ` +
          'restore into an empty dir, or pass --force to replace its state (its audit log is kept and replayed)',
      );
    }
    const path = (name: string) => join(dir, name);
    // Read before anything is replaced: the log of what happened after the backup.
    const { events, files, oldestAt } = await readAuditEventsOf(
      options.auditFile ?? path(DATA_FILES.audit),
      new Date(contents.snapshotAt).toISOString(),
    );
    // A log begun by a restore reaches back to that restore's snapshot: it recorded what it replayed.
    const reachesBack = events
      .filter((e) => e.type === 'backup.restored' && typeof e.details.snapshotAt === 'string')
      .some((e) => Date.parse(e.details.snapshotAt as string) <= contents.snapshotAt);
    const auditGapFrom =
      oldestAt !== null && Date.parse(oldestAt) > contents.snapshotAt && !reachesBack ? oldestAt : null;
    // Before the dir's keys are replaced: those made after the backup, which identities out there hold.
    const kept = await signingKeysMadeSince(path(DATA_FILES.secret), path(DATA_FILES.signingKeys), contents);
    contents.signingKeys.keys.push(...kept);
    const signingKeysMissing = signingKeysStillMissing(contents, events);
    const applied: AuditEvent[] = [];
    const replayed = await replayAfterSnapshot(contents, events, defaultConfig(), (event) =>
      applied.push(event),
    );

    // The old journal goes first: replayed onto the restored store it would bring the old state back.
    await unlink(journalFileOf(path(DATA_FILES.store))).catch(ignoreMissing);
    await writeFileDurably(path(DATA_FILES.store), JSON.stringify(contents.store));
    await writeFileDurably(path(DATA_FILES.signingKeys), JSON.stringify(contents.signingKeys, null, 2));
    await writeFileDurably(path(DATA_FILES.secret), `${contents.secret.toString('base64')}\n`);
    if (contents.adminKey !== null) await writeFileDurably(path(DATA_FILES.adminKey), contents.adminKey);
    // An admin key file of another state would not match the restored keys.
    else await unlink(path(DATA_FILES.adminKey)).catch(ignoreMissing);
    // Restored (--force) over a replica's dir, it is a single server's now.
    await unlink(path(REPLICA_MARKER)).catch(ignoreMissing);
    await syncDir(dir);

    const audit = await FileAuditLog.open(path(DATA_FILES.audit), systemClock);
    try {
      // What was replayed is recorded again in this dir's log: a later restore of the same backup
      // that reads it (this dir's audit.jsonl) replays it too, rather than bring it back.
      for (const event of applied)
        await audit.record({
          type: event.type,
          actor: { kind: 'system' },
          outcome: 'success',
          security: event.security,
          // Where the original came from: a confirmed revocation is restored with its host's address.
          remoteAddress: event.remoteAddress,
          groupId: event.groupId,
          connectorId: event.connectorId,
          keyId: event.keyId,
          details: { ...event.details, replayedFrom: { id: event.id, at: event.at } },
        });
      await audit.record({
        type: 'backup.restored',
        actor: { kind: 'system' },
        security: true,
        details: {
          snapshotAt: new Date(contents.snapshotAt).toISOString(),
          from: options.from,
          auditFiles: files,
          replayed,
          ...(auditGapFrom ? { auditGapFrom } : {}),
          ...(kept.length > 0 ? { signingKeysKept: kept.map((k) => k.kid) } : {}),
          ...(signingKeysMissing.length > 0 ? { signingKeysMissing } : {}),
        },
      });
    } finally {
      await audit.close();
    }
    return {
      snapshotAt: contents.snapshotAt,
      connectors: Object.keys(contents.store.connectors).length,
      auditFiles: files,
      auditGapFrom,
      replayed,
      signingKeysKept: kept.map((k) => k.kid),
      signingKeysMissing,
    };
  } finally {
    await lock.release();
  }
}

/** Why `--from FILE` cannot be read, and what to do, in one line. */
function unreadableBackup(file: string, error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return `--from ${file} does not exist: check the path (a backup is made with \`connector-server backup --out FILE\`)`;
    case 'EISDIR':
      return `--from ${file} is a folder: name the backup file in it`;
    case 'EACCES':
    case 'EPERM':
      return `--from ${file} cannot be read by this user (permission denied): run the restore as a user who can read it`;
    default:
      return `--from ${file} cannot be read (${error.code ?? error.message}): check the file, or use another backup`;
  }
}

function ignoreMissing(error: NodeJS.ErrnoException): void {
  if (error.code !== 'ENOENT') throw error;
}
