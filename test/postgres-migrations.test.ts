import { readdirSync } from 'node:fs';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../server/clock.js';
import { PostgresClusterSessions } from '../server/sessions/postgres-cluster-sessions.js';
import { appliedMigrations, MIGRATIONS_DIR, migrateToLatest } from '../server/store/postgres/migrate.js';
import { PgStore } from '../server/store/postgres/pg-store.js';
import { freshDatabase, migrateFirst, withClient } from './helpers/postgres.js';

/** The migrations' names in the order they apply. */
function migrationNames(): string[] {
  return readdirSync(MIGRATIONS_DIR)
    .filter((name) => name.endsWith('.sql'))
    .sort()
    .map((name) => name.replace(/\.sql$/, ''));
}

describe('PostgreSQL schema migrations', () => {
  it('bring an empty database to the latest schema, and a second run finds nothing to do', async () => {
    await using db = await freshDatabase();
    const first = await withClient(db.url, migrateToLatest);
    expect(first.length).toBeGreaterThan(0);
    const tables = await withClient(db.url, (c) =>
      c.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`),
    );
    expect(tables.rows.map((r) => r.tablename)).toEqual(
      expect.arrayContaining([
        'schema_migrations',
        'store_changes',
        'store_feed_horizon',
        'store_feed_readers',
        'store_records',
      ]),
    );
    expect(await withClient(db.url, migrateToLatest)).toEqual([]);
    expect(await withClient(db.url, appliedMigrations)).toEqual(first);
  });

  it("security events, rare among the audit log's rows, are listed through an index of their own, not by reading the log backwards", async () => {
    await using db = await freshDatabase();
    await withClient(db.url, migrateToLatest);
    const plan = await withClient(db.url, async (c) => {
      await c.query(`INSERT INTO audit_events (event_id, at, type, security, body)
        SELECT 'evt_' || g, now() - (g || ' seconds')::interval, 'session.connected', g % 5000 = 7, '{}'::jsonb
        FROM generate_series(1, 50000) g`);
      await c.query('ANALYZE audit_events');
      // The statement audit.list sends for `security: true` (AuditTable.list).
      const explained = await c.query(
        'EXPLAIN SELECT body FROM audit_events WHERE security = true ORDER BY at DESC, seq DESC LIMIT 50',
      );
      return explained.rows.map((r) => r['QUERY PLAN'] as string).join('\n');
    });
    expect(plan).toMatch(/Index Scan using audit_events_security_at/);
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

  it('a database of the version before feed pruning gains its tables, keeps its rows, and a store follows it', async () => {
    await using db = await freshDatabase();
    const names = migrationNames();
    const pruning = names.indexOf('1764892800000_store-feed-pruning');
    expect(pruning).toBeGreaterThan(0);
    await withClient(db.url, async (client) => {
      await migrateFirst(client, pruning);
      await client.query(
        `INSERT INTO store_records (section, id, body, version) VALUES ('groups', 'grp_1', '{"name":"g"}', 1);
         INSERT INTO store_changes (seq, origin, sections, ops) VALUES (1, 'old', '{groups}', '[]');
         SELECT setval(pg_get_serial_sequence('store_changes', 'seq'), 1)`,
      );
    });
    expect(await withClient(db.url, migrateToLatest)).toEqual(names.slice(pruning));
    const store = await PgStore.open(db.url, { pollMs: 100 });
    try {
      expect(store.read((v) => v.get('groups', 'grp_1'))).toEqual({ name: 'g' });
      await store.transact((tx) => tx.patch('groups', 'grp_1', { name: 'h' }));
      const state = await withClient(db.url, async (c) => ({
        changes: (await c.query('SELECT seq::int FROM store_changes ORDER BY seq')).rows.map((r) => r.seq),
        readers: (await c.query('SELECT origin FROM store_feed_readers')).rows.map((r) => r.origin),
        horizon: (await c.query('SELECT pruned_through::text AS h FROM store_feed_horizon')).rows[0].h,
      }));
      expect(state).toEqual({ changes: [1, 2], readers: [store.origin], horizon: '0' });
      expect(store.stats.reloads).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('a database of the version before replica processes keeps its replicas: listed with no process, beside a new replica that records its own', async () => {
    await using db = await freshDatabase();
    const names = migrationNames();
    const added = names.indexOf('1764979200000_replica-processes');
    expect(added).toBeGreaterThan(0);
    const now = Date.now();
    await withClient(db.url, async (client) => {
      await migrateFirst(client, added);
      // What a replica of that version wrote: its row (no process columns) and a session it holds.
      await client.query(
        `INSERT INTO replicas (id, url, started_at, heartbeat_at) VALUES ('old-replica', 'http://old:7420', $1, $1);
         INSERT INTO agent_sessions (connector_id, replica_id, session_id, remote_address, connected_at)
           VALUES ('con_1', 'old-replica', nextval('agent_session_claims'), '127.0.0.1', $1)`.replaceAll(
          '$1',
          String(now),
        ),
      );
    });
    expect(await withClient(db.url, migrateToLatest)).toEqual(names.slice(added));
    const pool = new pg.Pool({ connectionString: db.url, max: 2 });
    const cluster = await PostgresClusterSessions.start({
      pool,
      connectionString: db.url,
      clock: systemClock,
      process: { host: 'new-host', pid: 4242, version: '9.9.9' },
    });
    try {
      await cluster.listening('http://new:7420');
      const listed = await cluster.list();
      expect(listed.map((r) => [r.id, r.url, r.process, r.sessions, r.problems])).toEqual([
        ['old-replica', 'http://old:7420', null, 1, null],
        [cluster.selfId, 'http://new:7420', { host: 'new-host', pid: 4242, version: '9.9.9' }, 0, []],
      ]);
      expect(listed[0]!.startedAt).toBe(now);
    } finally {
      await cluster.stop();
      await pool.end();
    }
  });
});
