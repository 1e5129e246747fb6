import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import type pg from 'pg';

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

/** The migrations the database has, in order (for errors and `/healthz` details). */
export async function appliedMigrations(client: pg.ClientBase): Promise<string[]> {
  const exists = await client.query(`SELECT to_regclass($1) AS t`, [MIGRATIONS_TABLE]);
  if (!exists.rows[0].t) return [];
  const rows = await client.query(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY run_on, id`);
  return rows.rows.map((row: { name: string }) => row.name);
}
