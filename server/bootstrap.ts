import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ensurePrivateDir, removeStaleTemps } from '../shared/private-files.js';
import type { Clock } from './clock.js';
import { type DataFiles, openDataFiles } from './data-files.js';
import { checkCanListen } from './http/endpoints.js';
import type { ServerConfig } from './server-config.js';
import { type DataDirLock, lockDataDir } from './store/data-dir-lock.js';
import { loadTlsPair } from './tls-files.js';

/** What start-up opens before anything listens. */
export interface ServerState {
  tls: { cert: Buffer; key: Buffer } | null;
  files: DataFiles;
  /** Closes the store, the audit log and the signing keys, then lets the data dir go. */
  close(): Promise<void>;
}

/**
 * Opens what the server runs on, in an order that leaves nothing behind when a step fails: the TLS
 * pair and the listen addresses are checked before the data dir is touched, and the data dir is
 * locked before anything in it is written.
 */
export async function openServerState(
  config: ServerConfig,
  { clock, logger }: { clock: Clock; logger: Logger },
): Promise<ServerState> {
  const tls =
    config.tlsCertFile && config.tlsKeyFile ? await loadTlsPair(config.tlsCertFile, config.tlsKeyFile) : null;
  if (config.tlsKeyFile) await warnIfOthersRead(config.tlsKeyFile, logger);
  if (tls && config.tlsCertFile) warnIfExpiring(tls.cert, config.tlsCertFile, clock.now(), logger);
  // A port in use (or one this user may not bind) fails here, before the data dir, its files or a
  // bootstrap key are made.
  await checkCanListen(config);
  if (config.metricsListen) await checkCanListen(config.metricsListen);
  const made = dirsToMake(config.dataDir);
  // Another user's dir could hold links planted to catch the signing key: refused (PrivateDirError).
  await ensurePrivateDir(config.dataDir, { what: 'data dir', flag: '--data-dir' });
  // Before anything is written: a second server on this dir would acknowledge writes that the
  // first one's next compaction silently throws away (DataDirLockedError, nothing written).
  const lock: DataDirLock = await lockDataDir(config.dataDir);
  // Temp files of a server killed mid-write (a copy of a secret among them); the lock says no
  // other process writes here now.
  const stale = await removeStaleTemps(config.dataDir);
  if (stale > 0) logger.info({ removed: stale }, 'removed temp files a stopped server left in the data dir');
  let files: DataFiles;
  try {
    // Loaded only with a database: a server without one does not load pg and its kin at start.
    files = config.databaseUrl
      ? await (await import('./database-state.js')).openDatabaseState(
          { ...config, databaseUrl: config.databaseUrl },
          { clock, logger },
        )
      : await openDataFiles(config, { clock, logger });
  } catch (error) {
    // A refused first start leaves no empty data dir behind to puzzle over (a secret it made is
    // removed where it failed, when nothing was sealed with it).
    if (made.length > 0) await removeIfOnlyLock(lock.file, made);
    await lock.release();
    throw error;
  }
  return {
    tls,
    files,
    async close() {
      try {
        await files.close();
      } finally {
        await lock.release();
      }
    },
  };
}

/** The directories a start on `dir` makes: `dir` and its missing parents, deepest first. */
function dirsToMake(dir: string): string[] {
  const missing: string[] = [];
  for (let at = resolve(dir); !existsSync(at) && dirname(at) !== at; at = dirname(at)) missing.push(at);
  return missing;
}

/**
 * Removes the lock file and the directories this start made, deepest first, while the lock is still
 * held (so no other start can be holding the file removed). `rmdir` removes only empty directories:
 * anything a start wrote there stays, and so does everything above it.
 */
async function removeIfOnlyLock(lockFile: string, made: string[]): Promise<void> {
  try {
    await unlink(lockFile);
    for (const dir of made) await rmdir(dir);
  } catch {
    // Not empty, or gone: what is left is what the start wrote, or someone else's.
  }
}

/**
 * The TLS private key readable by every user of the host lets any of them impersonate the server.
 * Said, not refused: a key shared with a group (0640, Debian's ssl-cert) is a common, sound setup,
 * and a server that starts today must not stop at its next restart over this.
 */
async function warnIfOthersRead(keyFile: string, logger: Logger): Promise<void> {
  if (process.platform === 'win32') return;
  const mode = (await stat(keyFile).catch(() => null))?.mode;
  if (mode === undefined || (mode & 0o004) === 0) return;
  logger.warn(
    `--tls-key ${keyFile} can be read by every user of this host (mode ${(mode & 0o777).toString(8)}): chmod 600 it (or 640 with a group that must read it)`,
  );
}

/** How long before its end a certificate is said to be expiring at start. */
const CERT_EXPIRY_NOTICE_MS = 14 * 86_400_000;

/**
 * A certificate out of its validity period is refused by every agent (each retries, saying so), and
 * one about to be is soon: said at start, not refused (a renewal may be on its way, and the
 * server's other work goes on).
 */
function warnIfExpiring(certPem: Buffer, certFile: string, now: number, logger: Logger): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    return; // loadTlsPair checked the pair: a chain Node cannot read whole here is left alone
  }
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  if (to <= now)
    logger.warn(
      `--tls-cert ${certFile} expired on ${new Date(to).toISOString()}: agents and clients refuse it; renew it`,
    );
  else if (from > now)
    logger.warn(
      `--tls-cert ${certFile} is valid only from ${new Date(from).toISOString()}: agents and clients refuse it until then (is this host's clock right?)`,
    );
  else if (to - now < CERT_EXPIRY_NOTICE_MS)
    logger.warn(
      `--tls-cert ${certFile} expires on ${new Date(to).toISOString()}, in ${Math.ceil((to - now) / 86_400_000)} day(s): renew it before then`,
    );
}
