import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { appliedMigrations, migrateToLatest } from '../server/store/postgres/migrate.js';
import { freshDatabase, withClient } from './helpers/postgres.js';

describe('PostgreSQL schema migrations', () => {
  it('bring an empty database to the latest schema, and a second run finds nothing to do', async () => {
    await using db = await freshDatabase();
    const first = await withClient(db.url, migrateToLatest);
    expect(first.length).toBeGreaterThan(0);
    const tables = await withClient(db.url, (c) =>
      c.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`),
    );
    expect(tables.rows.map((r) => r.tablename)).toEqual(
      expect.arrayContaining(['schema_migrations', 'store_changes', 'store_records']),
    );
    expect(await withClient(db.url, migrateToLatest)).toEqual([]);
    expect(await withClient(db.url, appliedMigrations)).toEqual(first);
  });

  it('three replicas migrating one empty database at once: one applies, the others wait and find it done', async () => {
    await using db = await freshDatabase();
    const clients = await Promise.all(
      [1, 2, 3].map(async () => {
        const client = new pg.Client({ connectionString: db.url });
        await client.connect();
        return client;
      }),
    );
    try {
      const results = await Promise.all(clients.map((c) => migrateToLatest(c)));
      const appliedBy = results.filter((names) => names.length > 0);
      expect(appliedBy).toHaveLength(1);
      expect(await withClient(db.url, appliedMigrations)).toEqual(appliedBy[0]);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });
});
