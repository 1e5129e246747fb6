import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import type pg from 'pg';
import { forgetRestoredFeed } from './feed-retention.js';

/** The folder of the schema's migrations: forward-only SQL files, applied in name order. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations', import.meta.url));
const MIGRATIONS_TABLE = 'schema_migrations';

/**
 * Brings the database's schema up to this build's, at start-up. node-pg-migrate applies the missing
 * migrations in one transaction under a PostgreSQL advisory lock; with `wait`, replicas starting
 * together on an empty database queue behind the first one instead of failing, and each then finds
 * nothing left to do. Returns the names of the migrations this call applied.
 */
export async function migrateToLatest(client: pg.ClientBase): Promise<string[]> {
  await checkDatabaseIsOurs(client);
  const applied = await runner({
    dbClient: client,
    dir: MIGRATIONS_DIR,
    migrationsTable: MIGRATIONS_TABLE,
    direction: 'up',
    count: Number.POSITIVE_INFINITY,
    singleTransaction: true,
    checkOrder: true,
    advisoryLockMode: 'wait',
    // node-pg-migrate logs each step to the console by default; the server has its own logger.
    log: () => {},
  });
  return applied.map((migration) => migration.name);
}

/**
 * What a store does to the database before it loads it: the schema brought up to this build's, and
 * the change feed of another cluster forgotten (a restored database: forgetRestoredFeed), said once.
 */
export async function prepareDatabase(
  client: pg.ClientBase,
  logger?: { warn(details: object, message: string): void },
): Promise<void> {
  await migrateToLatest(client);
  const restored = await forgetRestoredFeed(client);
  if (restored.changes > 0 || restored.readers > 0 || restored.horizonLowered)
    logger?.warn(
      restored,
      'this database was restored from another PostgreSQL cluster (its change feed carries later transaction ids): forgot that feed, and the replicas and agent sessions the dump listed; its records are all loaded',
    );
}

/** The migrations the database has, in order (for errors and `/healthz` details). */
export async function appliedMigrations(client: pg.ClientBase): Promise<string[]> {
  const exists = await client.query(`SELECT to_regclass($1) AS t`, [MIGRATIONS_TABLE]);
  if (!exists.rows[0].t) return [];
  const rows = await client.query(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY run_on, id`);
  return rows.rows.map((row: { name: string }) => row.name);
}

/**
 * The database cannot be this server's, as it stands: another application's tables are in it, or a
 * newer version of this server migrated it. The message says which and what to do.
 */
export class ForeignDatabaseError extends Error {
  override readonly name = 'ForeignDatabaseError';
}

/** This build's migrations, by the name node-pg-migrate records (the file name without `.sql`). */
function knownMigrations(): Set<string> {
  return new Set(
    readdirSync(MIGRATIONS_DIR)
      .filter((file) => file.endsWith('.sql'))
      .map((file) => file.slice(0, -'.sql'.length)),
  );
}

/**
 * Refuses, before anything is written: a database whose schema holds relations of another
 * application and no migrations table of ours (a server would add its tables beside them, and
 * `import` would call it empty), a migrations table that is not node-pg-migrate's (another tool's of
 * the same name), and migrations this build does not know (a newer version's: this one would write
 * to a schema whose rules it does not know). Objects of extensions (PostGIS's tables) do not count.
 */
async function checkDatabaseIsOurs(client: pg.ClientBase): Promise<void> {
  // One statement, one snapshot: replicas starting together see the migrations table and the tables
  // another replica's first migration made appear in the same commit, never the second alone.
  const found = await client.query<{ columns: string[]; others: string[] }>(
    // The catalog, not information_schema: that one hides the tables a user has no privilege on.
    `SELECT ARRAY(SELECT attname::text FROM pg_attribute
                   WHERE attrelid = to_regclass(quote_ident(current_schema()) || '.' || $1)
                     AND attnum > 0 AND NOT attisdropped) AS columns,
            ARRAY(SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
                   ORDER BY c.relname LIMIT 6) AS others`,
    [MIGRATIONS_TABLE],
  );
  const { columns, others } = found.rows[0] ?? { columns: [], others: [] };
  if (columns.length === 0) {
    if (others.length > 0)
      throw new ForeignDatabaseError(
        `it holds another application's tables (${others.slice(0, 5).join(', ')}${others.length > 5 ? ', …' : ''}) and none of this server's: give the server a database of its own (createdb connector)`,
      );
    return;
  }
  if (!columns.includes('name') || !columns.includes('run_on'))
    throw new ForeignDatabaseError(
      `its ${MIGRATIONS_TABLE} table is another tool's (no name and run_on columns): give the server a database of its own (createdb connector)`,
    );
  const known = knownMigrations();
  const unknown = (await appliedMigrations(client)).filter((name) => !known.has(name));
  if (unknown.length > 0)
    throw new ForeignDatabaseError(
      `a newer version of connector-server migrated it (migrations this version does not know: ${unknown.join(', ')}): run that version or a later one here, not this one`,
    );
}
