import type { Logger } from 'pino';
import { ensurePrivateDir } from '../shared/private-files.js';
import type { Clock } from './clock.js';
import { type DataFiles, loadTlsPair, openDataFiles } from './data-files.js';
import { checkCanListen } from './http/endpoints.js';
import type { ServerConfig } from './server-config.js';
import { type DataDirLock, lockDataDir } from './store/data-dir-lock.js';

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
  // A port in use (or one this user may not bind) fails here, before the data dir, its files or a
  // bootstrap key are made.
  await checkCanListen(config);
  if (config.metricsListen) await checkCanListen(config.metricsListen);
  // Another user's dir could hold links planted to catch the signing key: refused (PrivateDirError).
  await ensurePrivateDir(config.dataDir, { what: 'data dir', flag: '--data-dir' });
  // Before anything is written: a second server on this dir would acknowledge writes that the
  // first one's next compaction silently throws away (DataDirLockedError, nothing written).
  const lock: DataDirLock = await lockDataDir(config.dataDir);
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
