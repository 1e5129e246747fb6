import { runner } from 'node-pg-migrate';
import pg from 'pg';
import { createDatabase, type Database } from '../../scripts/lib/postgres.js';
import { MIGRATIONS_DIR } from '../../server/store/postgres/migrate.js';

/** The cluster start-up lives in scripts/lib/postgres.ts: the benchmark starts one too. */
export { type PostgresCluster, startPostgres, withClient } from '../../scripts/lib/postgres.js';

export type TestDatabase = Database;

/**
 * An empty database of its own for one test, in the cluster the test run shares
 * (CONNECTOR_TEST_DATABASE_URL when set, else the one `test/global-setup.ts` started).
 */
export function freshDatabase(clusterUrl = sharedClusterUrl()): Promise<TestDatabase> {
  return createDatabase(clusterUrl);
}

export function sharedClusterUrl(): string {
  const url = process.env.CONNECTOR_TEST_DATABASE_URL;
  if (!url) throw new Error('no test PostgreSQL: test/global-setup.ts sets CONNECTOR_TEST_DATABASE_URL');
  return url;
}

/**
 * A pool for a test's own statements. Its idle connections die when the test's database is dropped
 * (`DROP DATABASE … WITH (FORCE)` terminates them, 57P01); a pool without an 'error' listener then
 * throws that from nowhere and fails whichever test runs at the time.
 */
export function testPool(url: string, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => {});
  return pool;
}

/** Applies the first `count` migrations only: the schema an older version of the server left. */
export async function migrateFirst(client: pg.ClientBase, count: number): Promise<void> {
  await runner({
    dbClient: client,
    dir: MIGRATIONS_DIR,
    migrationsTable: 'schema_migrations',
    direction: 'up',
    count,
    log: () => {},
  });
}
