import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, readdirSync } from 'node:fs';
import { type FileHandle, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { writeFileDurably } from '../shared/private-files.js';
import type { Clock } from './clock.js';
import type { Metrics } from './metrics.js';
import { refuseReplicaDataDir } from './replica-marker.js';
import { ISSUER, type ServerConfig } from './server-config.js';
import type { AgentSessionService } from './services/agent-sessions.js';
import { type AuditLog, auditOutageLogging, FileAuditLog } from './services/audit.js';
import type { DomainEvents } from './services/events.js';
import { IdentityAuthority } from './services/identity.js';
import type { ReplicaDirectory } from './services/replicas.js';
import type { Termination } from './services/views.js';
import type { ClusterSessions } from './sessions/cluster-sessions.js';
import { DataFileError } from './store/data-file.js';
import { JournalStore } from './store/journal-store.js';
import type { ObservedStore } from './store/observed-store.js';
import type { Store } from './store/store.js';

// The files the server reads before it starts: its TLS pair and its data dir's files. Each failure names the
// file and what to do, as one line.

/** Reads the 32-byte server secret that encrypts stored provisioning keys, creating it on first start. */
export async function loadOrCreateSecret(file: string): Promise<Buffer> {
  const secret = await readSecret(file);
  if (secret) return secret;
  const created = randomBytes(32);
  await writeFileDurably(file, `${created.toString('base64')}\n`);
  return created;
}

/**
 * The `--secret-file` cannot be used (missing, open to other users, empty, not a secret): the
 * operator's to fix before start (exit 2). No message ever holds the file's content.
 */
export class SecretFileError extends DataFileError {}

/**
 * Reads a secret this server is given (the one every replica on one database shares, from
 * `--secret-file`): never creates one, since a replica with a secret of its own could not read what
 * the others stored. The file must be the owner's alone (a secret readable by others is a secret
 * shared with them), and hold one base64 32-byte secret, as `secret.key` does.
 */
export async function loadGivenSecret(file: string): Promise<Buffer> {
  // One open file checked and read: its mode and owner are those of what is read, not of a file
  // put in its place between a look and a read.
  let handle: FileHandle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new SecretFileError(
        file,
        'does not exist; copy secret.key from the data dir of a replica that starts (every replica needs the same one)',
      );
    throw new SecretFileError(file, `cannot be read (${code ?? (error as Error).message})`);
  }
  let text: string;
  try {
    const found = await handle.stat();
    // Before the mode: "chmod 600" is the wrong advice for a directory (/tmp, say).
    if (!found.isFile())
      throw new SecretFileError(
        file,
        `is ${found.isDirectory() ? 'a directory' : 'not a regular file'}; give the path of the secret file itself (a copy of a replica's secret.key)`,
      );
    if (process.platform !== 'win32' && (found.mode & 0o077) !== 0)
      throw new SecretFileError(
        file,
        `is open to other users (mode ${(found.mode & 0o777).toString(8).padStart(4, '0')}); make it the owner's alone: chmod 600 ${file}`,
      );
    // Owned by another user (root aside), that user could put another secret in it at will.
    const uid = process.getuid?.();
    if (uid !== undefined && found.uid !== uid && found.uid !== 0)
      throw new SecretFileError(
        file,
        `is owned by another user (uid ${found.uid}), who could replace it; make it this server's: chown ${uid} ${file}`,
      );
    text = await handle.readFile('utf8');
  } catch (error) {
    if (error instanceof SecretFileError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new SecretFileError(file, `cannot be read (${code ?? (error as Error).message})`);
  } finally {
    await handle.close();
  }
  if (text.trim() === '')
    throw new SecretFileError(
      file,
      "is empty; it must hold the secret.key of the replica that set the database up (copy that file, don't retype it)",
    );
  const secret = parseSecret(text);
  if (!secret)
    throw new SecretFileError(
      file,
      'is damaged (it must hold one base64 32-byte secret, as secret.key does); copy the secret.key of the replica that set the database up',
    );
  return secret;
}

/** The secret written in `text` (one base64 32-byte value), or undefined when it holds anything else. */
function parseSecret(text: string): Buffer | undefined {
  const secret = Buffer.from(text.trim(), 'base64');
  return secret.length === 32 && secret.toString('base64') === text.trim() ? secret : undefined;
}

/** The secret in `file`, or undefined when there is no such file. */
async function readSecret(file: string): Promise<Buffer | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new DataFileError(file, `cannot be read (${code ?? (error as Error).message})`);
  }
  const secret = parseSecret(text);
  if (!secret) {
    throw new DataFileError(
      file,
      'is damaged (it must hold one base64 32-byte secret); restore it from a backup: without it the stored provisioning keys cannot be read',
    );
  }
  return secret;
}

/**
 * PostgreSQL could not be used at start-up; the message says why without the URL's password.
 * `configuration`: no start will succeed until the operator changes what the server is given (a
 * database of another application, or one a newer version migrated), as against a database down or
 * refusing for now, which a start a little later may find fixed.
 */
export class DatabaseStartError extends Error {
  override readonly name = 'DatabaseStartError';
  constructor(
    message: string,
    readonly configuration = false,
  ) {
    super(message);
  }
}

/** What the server runs on: its secret, store, audit log and signing keys, wherever they live. */
export interface DataFiles {
  secret: Buffer;
  store: Store;
  audit: AuditLog;
  identity: IdentityAuthority;
  /** Writes what is pending and closes them (the audit log after the store: closing writes to it). */
  close(): Promise<void>;
  /** With --database-url: the other replicas (their sessions, their changes, this replica's health). */
  replication?: Replication;
}

/** What a replica shares with the others beyond the store (see database-state.ts). */
export interface Replication {
  cluster: ClusterSessions;
  /** The replicas table: who serves the deployment (`replicas.list`). */
  directory: ReplicaDirectory;
  /** Hands the services what the other replicas do: their changes as domain events, reaped sessions. */
  follow(services: ReplicaFollowers): void;
  /** Why this replica should not take new sessions now; empty when it is ready. */
  problems(): string[];
}

export interface ReplicaFollowers {
  events: DomainEvents;
  /** Told of every record another replica changed (the console's feed, admin sockets). */
  records: Pick<ObservedStore, 'announceForeign'>;
  agentSessions: Pick<AgentSessionService, 'recordSeen'>;
  /** Told when another replica recorded a revocation's confirmation (a revoke here may wait for it). */
  terminations: { confirmedElsewhere(connectorId: string, termination: Termination): void };
  metrics: Pick<Metrics, 'feedRowsPruned' | 'feedReloads' | 'feedLagSeconds' | 'cutOffs' | 'cutOffSessions'>;
}

/**
 * Files only a data dir that has served on the embedded store holds: with any of them, a missing
 * store.json is a lost one. Not admin.key: a replica's data dir has one, and no store of its own.
 */
const SERVED_DIR_FILES = ['signing-keys.json', 'store.journal', 'audit.jsonl'];

/**
 * Refuses a data dir that has served but lost its store (deleted, moved away after it was damaged):
 * started empty, the server would answer every enrolled agent CONNECTOR_NOT_FOUND, and each would
 * wipe its identity. A new data dir (none of those files) starts empty, as always.
 */
function refuseStorelessDataDir(dataDir: string): void {
  if (existsSync(join(dataDir, 'store.json'))) return;
  const left = SERVED_DIR_FILES.filter((name) => existsSync(join(dataDir, name)));
  if (left.length === 0) return;
  throw new DataFileError(
    join(dataDir, 'store.json'),
    `is missing, while the data dir still holds ${left.join(', ')}: it has served, and starting on an empty store would make ` +
      'every enrolled connector unknown (their agents would wipe their identities). Put store.json back, or restore the ' +
      'data dir from a backup (connector-server restore --from <backup> --data-dir <new dir>); to start a new deployment, ' +
      'give the server a new, empty --data-dir',
  );
}

/** The data dir's files that hold secrets or state (with the audit log's rotated files). */
const PRIVATE_DATA_FILE =
  /^(secret\.key|signing-keys\.json|admin\.key|store\.json|store\.journal|audit\.jsonl(\.\d+)?)$/;

/**
 * Takes group and other bits off this user's data dir files (a copy made with a loose umask, a
 * restore by hand): the server writes them 0600, and `--secret-file` refuses a looser one. Files of
 * another user are left alone. Answers the names it changed.
 */
function tightenFileModes(dataDir: string): string[] {
  if (process.platform === 'win32' || !existsSync(dataDir)) return [];
  const uid = process.getuid?.();
  const changed: string[] = [];
  for (const name of readdirSync(dataDir)) {
    if (!PRIVATE_DATA_FILE.test(name)) continue;
    const info = lstatSync(join(dataDir, name));
    if (!info.isFile() || info.uid !== uid || (info.mode & 0o077) === 0) continue;
    chmodSync(join(dataDir, name), 0o600);
    changed.push(name);
  }
  return changed;
}

/** Opens the data dir's files: the secret, the store, the audit log and the signing keys, in that order. */
export async function openDataFiles(
  config: Pick<ServerConfig, 'dataDir' | 'auditMaxBytes' | 'auditKeep'>,
  { clock, logger }: { clock: Clock; logger: Logger },
): Promise<DataFiles> {
  const file = (name: string) => join(config.dataDir, name);
  // Before anything is made: a replica's dir run without its database would become a new server.
  refuseReplicaDataDir(config.dataDir);
  refuseStorelessDataDir(config.dataDir);
  const loosened = tightenFileModes(config.dataDir);
  if (loosened.length > 0)
    logger.warn(
      { dataDir: config.dataDir, files: loosened },
      'data dir files were open to group or others (the secret that encrypts provisioning keys, the signing keys, an admin key, the store): made 0600',
    );
  const secret = await loadOrCreateSecret(file('secret.key'));
  const store = await JournalStore.open(file('store.json'), {
    onWriteError: (error) =>
      logger.error(
        { err: error },
        'store write failed; the changes it carried were undone in memory and their callers refused',
      ),
    onTornTail: ({ file, at, bytes }) =>
      logger.warn(
        { file, at, bytes },
        'the journal ended in a torn entry (an append a crash cut short, never acknowledged): cut off',
      ),
    onFoldError: (error) =>
      logger.warn(
        { err: error },
        'could not fold the journal into store.json at shutdown; nothing is lost: store.journal keeps the changes and the next start reads it',
      ),
  });
  // Identities its keys signed are out there: a new key would leave every one of them unknown.
  const signed = store.read((view) => view.list('connectors').filter((c) => c.status !== 'revoked').length);
  if (signed > 0 && !existsSync(file('signing-keys.json'))) {
    await store.close();
    throw new DataFileError(
      file('signing-keys.json'),
      `is missing, while the store holds ${signed} connector(s) with identities its keys signed: a new key would make every one of them unknown ` +
        '(IDENTITY_UNKNOWN_SIGNER). Put signing-keys.json back, or restore the data dir from a backup (connector-server restore --from <backup> --data-dir <new dir>)',
    );
  }
  const audit = await FileAuditLog.open(file('audit.jsonl'), clock, {
    maxBytes: config.auditMaxBytes,
    keep: config.auditKeep,
    onWriteError: (error) =>
      logger.error(
        { err: error },
        'audit log write failed (events not written are held in memory and retried until the disk takes them)',
      ),
    ...auditOutageLogging(logger),
  });
  const identity = await IdentityAuthority.open(file('signing-keys.json'), { issuer: ISSUER, clock });
  return {
    secret,
    store,
    audit,
    identity,
    async close() {
      await store.close();
      await audit.close();
    },
  };
}
