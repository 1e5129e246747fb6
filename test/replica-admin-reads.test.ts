import { afterEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { freshDatabase, testPool } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

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
    const pool = testPool(db.url, 1);
    cleanups.push(() => pool.end());
    const locker = await pool.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
    cleanups.push(async () => {
      await locker.query('ROLLBACK').catch(() => {});
      locker.release();
    });
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
    const pool = testPool(db.url, 2);
    cleanups.push(() => pool.end());
    const locker = await pool.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE');
    cleanups.push(async () => {
      await locker.query('ROLLBACK').catch(() => {});
      locker.release();
    });
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
