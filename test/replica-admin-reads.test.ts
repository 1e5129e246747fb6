import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { boundedRead, connectionOptions, READ_WAIT_MS } from '../server/store/postgres/connect.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { freshDatabase, testPool } from './helpers/postgres.js';
import { startRelay } from './helpers/relay.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/**
 * Holds the audit table locked (until the test's clean-up) from a connection of a pool of two: reads
 * of it wait in PostgreSQL as a slow one would. The pool's other connection is free for the test.
 */
async function lockAuditTable(url: string) {
  const pool = testPool(url, 2);
  cleanups.push(() => pool.end());
  const locker = await pool.connect();
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
  cleanups.push(async () => {
    await locker.query('ROLLBACK').catch(() => {});
    locker.release();
  });
  return { pool, locker };
}

describe('admin reads of the database on a replica', () => {
  it('a read-scope key with many slow audit.list calls does not hold up the claims that tell the other replicas who is connected', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const servers = await startReplicas(db.url, 2);
    cleanups.push(() => stopAll(servers));
    const [a, b] = servers as [TestServer, TestServer];
    const group = await a.admin.groups.create.mutate({ name: 'Readers' });
    const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const enrolled = (await enrollSim(a.url, key, 'watched')).enrolled!;
    const made = await a.admin.apiKeys.create.mutate({ name: 'auditor', scope: 'read' });
    const reader = createAdminClient({ url: a.url, adminKey: (made as { key: string }).key });
    await reader.audit.list.query({ limit: 1 }); // flushes the audit events written so far

    // Slow audit reads, as a filter that scans a large table makes them: the table is locked, so each
    // read waits in PostgreSQL (up to the 5 s an admin read may take) on a connection of A's pool.
    const { locker } = await lockAuditTable(db.url);
    const reads = Array.from({ length: 8 }, () =>
      reader.audit.list.query({ security: false, limit: 10_000 }).then(
        () => 'read',
        () => 'refused',
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));

    // An agent connects to A meanwhile: B hears of its session through A's claim (~50 ms).
    const session = connectSim(a.url, enrolled);
    cleanups.push(() => session.close());
    await session.waitFor('ready', 5000);
    const connected = performance.now();
    await expect
      .poll(
        async () => (await b.admin.connectors.get.query({ connectorId: enrolled.connectorId })).connection,
        {
          timeout: 4000,
          interval: 50,
        },
      )
      .toBe('connected');
    expect(performance.now() - connected).toBeLessThan(4000);

    // The reads end within their bound: answered, or refused STORE_UNAVAILABLE, none hangs.
    await locker.query('ROLLBACK');
    const outcomes = await Promise.all(reads);
    expect(outcomes).toHaveLength(8);
  }, 60_000);

  it('a read past its bound is answered STORE_UNAVAILABLE and cancelled in PostgreSQL too, not left waiting there', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const [a] = (await startReplicas(db.url, 1)) as [TestServer];
    cleanups.push(() => stopAll([a]));
    await a.admin.audit.list.query({ limit: 1 });
    const { pool } = await lockAuditTable(db.url);
    await expect(a.admin.audit.list.query({ limit: 10 })).rejects.toMatchObject({
      data: { reason: 'STORE_UNAVAILABLE' },
    });
    // The lock is still held: a read left running would still be queued behind it.
    const waiting = await pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'active' AND query LIKE '%FROM audit_events%' AND pid <> pg_backend_pid()`,
    );
    expect(waiting.rows[0].n).toBe(0);
  }, 60_000);
});

describe('an admin read whose connection to the database goes wrong', () => {
  /** A pool reaching the test's database through a relay the test can partition and reset. */
  async function relayedPool() {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const direct = new URL(db.url);
    const relay = await startRelay(`http://${direct.hostname}:${direct.port}`);
    cleanups.push(() => relay.close());
    const through = new URL(db.url);
    through.hostname = '127.0.0.1';
    through.port = String(relay.port);
    const pool = new pg.Pool({ ...connectionOptions(through.toString()), max: 4 });
    pool.on('error', () => {});
    cleanups.push(() => pool.end());
    await boundedRead(pool, 'The audit log', 'SELECT 1'); // a connection open and idle in the pool
    return { relay, pool };
  }

  it('a database that stops answering (a partition): STORE_UNAVAILABLE within the bound, not a read that waits as long as the partition lasts', async () => {
    const { relay, pool } = await relayedPool();
    relay.partition();
    cleanups.push(async () => relay.heal());
    const started = performance.now();
    await expect(boundedRead(pool, 'The audit log', 'SELECT 1')).rejects.toMatchObject({
      reason: 'STORE_UNAVAILABLE',
    });
    expect(performance.now() - started).toBeLessThan(READ_WAIT_MS + 2000);
  }, 60_000);

  it('a connection reset in the middle of a read: STORE_UNAVAILABLE, and nothing thrown from nowhere', async () => {
    const { relay, pool } = await relayedPool();
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on('uncaughtException', onUncaught);
    cleanups.push(async () => process.off('uncaughtException', onUncaught));
    const read = boundedRead(pool, 'The audit log', 'SELECT pg_sleep(3)');
    await new Promise((resolve) => setTimeout(resolve, 500));
    relay.partition();
    relay.heal(); // the held connection is reset
    await expect(read).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(uncaught).toEqual([]);
    await expect(boundedRead(pool, 'The audit log', 'SELECT 1')).resolves.toMatchObject({ rowCount: 1 });
  }, 60_000);
});
