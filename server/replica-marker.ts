import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileDurably } from '../shared/private-files.js';
import { DataFileError } from './store/data-file.js';

/**
 * The file that says a data dir is a replica's: written by every start with a database URL, read
 * by every start without one. A replica's data dir holds no state (it is in the database), so a
 * replica restarted without its URL (an environment variable lost to `sudo`, a unit file edited)
 * used to come up as a new, empty single server on the same address: new signing keys, which
 * refuse every identity the deployment issued, and agents that reached it wiped theirs.
 */
export const REPLICA_MARKER = 'replica.json';

interface ReplicaMarker {
  /** Where the database is, host:port/database (never the URL: it may hold the password). */
  database: string;
  note: string;
}

/** Records that `dataDir` belongs to a replica of the database at `database` (host:port/db). */
export async function markReplicaDataDir(dataDir: string, database: string): Promise<void> {
  const marker: ReplicaMarker = {
    database,
    note:
      'This data dir belongs to a replica of that PostgreSQL database: connector-server serve refuses ' +
      'to start on it without --database-url (or CONNECTOR_DATABASE_URL). To make it a single ' +
      "server's dir instead, move this file away.",
  };
  await writeFileDurably(join(dataDir, REPLICA_MARKER), `${JSON.stringify(marker, null, 2)}\n`);
}

/** The database a replica's data dir names, or null for a dir no replica has used. */
export function replicaDatabaseOf(dataDir: string): string | null {
  let text: string;
  try {
    text = readFileSync(join(dataDir, REPLICA_MARKER), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new DataFileError(
      join(dataDir, REPLICA_MARKER),
      `cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  try {
    const database = (JSON.parse(text) as Partial<ReplicaMarker>).database;
    return typeof database === 'string' && database.length > 0 ? database : 'an unknown database';
  } catch {
    // Whatever it holds, its presence says a replica used the dir.
    return 'an unknown database';
  }
}

/** A start without a database URL on a replica's data dir, or with another database's: refused, exit 2. */
export class ReplicaDataDirError extends DataFileError {}

/**
 * Refuses a replica's data dir given another database than the one it names: a mistyped or stale
 * URL (an empty database) would start a new deployment on the same address, whose keys refuse every
 * agent of the old one and whose provisioning keys are not the ones deployed (KEY_INVALID, final).
 */
export function refuseOtherDatabase(dataDir: string, database: string): void {
  const named = replicaDatabaseOf(dataDir);
  if (named === null || named === database || named === 'an unknown database') return;
  throw new ReplicaDataDirError(
    join(dataDir, REPLICA_MARKER),
    `this data dir is a replica's of the PostgreSQL database at ${named}, but the database URL names ${database}: ` +
      `start it with ${named}'s URL (--database-url or CONNECTOR_DATABASE_URL). If the database moved there on purpose ` +
      `(pg_dump and pg_restore, a new host name), move ${REPLICA_MARKER} away first; for a replica of another deployment, use another --data-dir`,
  );
}

/** Refuses to run a single server on a replica's data dir (see REPLICA_MARKER). */
export function refuseReplicaDataDir(dataDir: string): void {
  const database = replicaDatabaseOf(dataDir);
  if (database === null) return;
  throw new ReplicaDataDirError(
    join(dataDir, REPLICA_MARKER),
    `this data dir is a replica's, of the PostgreSQL database at ${database}, and no database URL was given: ` +
      'start it as before, with --database-url postgres://… (or CONNECTOR_DATABASE_URL) and its --secret-file if it had one. ' +
      `Started without, it would come up as a new, empty server whose keys refuse every agent of the deployment. To run a single server on this dir instead, move ${REPLICA_MARKER} away`,
  );
}
