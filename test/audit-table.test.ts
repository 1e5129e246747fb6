import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { composeServer } from '../server/app.js';
import { ManualClock } from '../server/clock.js';
import type { Context } from '../server/context.js';
import { appRouter } from '../server/router.js';
import { ISSUER } from '../server/server-config.js';
import { TableAuditLog } from '../server/services/audit.js';
import { IdentityAuthority } from '../server/services/identity.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { SecretBox } from '../server/services/secrets.js';
import type { HeldAuditRecovery } from '../server/store/held-audit.js';
import { MemoryStore } from '../server/store/memory-store.js';
import { AUDIT_INSERT_MAX_ROWS } from '../server/store/postgres/audit-table.js';
import { migrateToLatest } from '../server/store/postgres/migrate.js';
import { createCallerFactory } from '../server/trpc.js';
import { DAY_MS } from '../shared/durations.js';
import { freshDatabase, testPool, withClient } from './helpers/postgres.js';

const actor = { kind: 'system' } as const;

/** A migrated database of its own, and pools (one per replica) that end with it. */
async function auditDatabase() {
  const db = await freshDatabase();
  await withClient(db.url, migrateToLatest);
  const pools: pg.Pool[] = [];
  return {
    url: db.url,
    pool() {
      const pool = testPool(db.url, 4);
      pools.push(pool);
      return pool;
    },
    query: (sql: string, params: unknown[] = []) => withClient(db.url, (c) => c.query(sql, params)),
    async [Symbol.asyncDispose]() {
      await Promise.all(pools.map((p) => p.end()));
      await db[Symbol.asyncDispose]();
    },
  };
}

/** One replica's API (its own store in memory) with its audit log in the shared table. */
async function replicaApi(pool: pg.Pool, clock: ManualClock) {
  const audit = TableAuditLog.create(pool, clock);
  const { services, hub } = composeServer(
    {
      store: new MemoryStore(),
      audit,
      clock,
      identity: await IdentityAuthority.inMemory({ issuer: ISSUER, clock }),
      secretBox: new SecretBox(randomBytes(32)),
      logger: pino({ level: 'silent' }),
    },
    {
      keyTtlMs: 14 * DAY_MS,
      identityTtlMs: 365 * DAY_MS,
      pendingTtlMs: 7 * DAY_MS,
      rateLimits: DEFAULT_RATE_LIMITS,
    },
  );
  const { key } = await services.apiKeys.create(
    { name: 'test', scope: 'admin' },
    { actor: { kind: 'system' }, remoteAddress: null },
  );
  const context: Context = {
    services,
    hub,
    remoteAddress: '192.0.2.1',
    bearerToken: key,
    agent: null,
    agentRefusal: 'IDENTITY_INVALID',
  };
  return { audit, admin: createCallerFactory(appRouter)(context) };
}

describe('the audit table shared by replicas', () => {
  it('audit.list answers the same events, in the same shape and order, from either replica', async () => {
    await using db = await auditDatabase();
    const clock = new ManualClock();
    const a = await replicaApi(db.pool(), clock);
    const b = await replicaApi(db.pool(), clock);
    await a.admin.groups.create({ name: 'Made on A' });
    clock.advance(1);
    await b.admin.groups.create({ name: 'Made on B' });
    const fromA = await a.admin.audit.list({});
    const fromB = await b.admin.audit.list({});
    expect(fromB).toEqual(fromA);
    expect(fromA.map((e) => [e.type, e.details.name ?? null])).toEqual([
      ['group.created', 'Made on B'],
      ['group.created', 'Made on A'],
      ['api_key.created', 'test'],
      ['api_key.created', 'test'],
    ]);
    // A page cursor from one replica works on the other.
    const [first] = await a.admin.audit.list({ limit: 1 });
    expect(await b.admin.audit.list({ before: first!.id, limit: 1 })).toEqual([fromA[1]]);
    await a.audit.close();
    await b.audit.close();
  });

  it('a burst is written as few INSERTs of many rows (one transaction each), in the order recorded', async () => {
    await using db = await auditDatabase();
    const log = TableAuditLog.create(db.pool(), new ManualClock());
    const burst = AUDIT_INSERT_MAX_ROWS + 1200;
    const recorded = await Promise.all(
      Array.from({ length: burst }, (_, n) => log.record({ type: 'test.event', actor, details: { n } })),
    );
    // The first event goes out alone; the rest, which came while it was written, in chunks of at
    // most AUDIT_INSERT_MAX_ROWS. Rows of one INSERT share its transaction id (xmin).
    const batches = await db.query(
      `SELECT xmin::text AS tx, count(*)::int AS n FROM audit_events GROUP BY xmin::text ORDER BY min(seq)`,
    );
    expect(batches.rows.map((r) => r.n)).toEqual([
      1,
      AUDIT_INSERT_MAX_ROWS,
      burst - 1 - AUDIT_INSERT_MAX_ROWS,
    ]);
    const listed = await log.list({ limit: 10_000 });
    expect(listed.map((e) => e.id)).toEqual(
      recorded
        .map((e) => e.id)
        .reverse()
        .slice(0, 10_000),
    );
    await log.close();
  });

  it('lazy events that come while an INSERT runs wait for their timer, then go out together', async () => {
    await using db = await auditDatabase();
    const log = TableAuditLog.create(db.pool(), new ManualClock());
    const urgent = log.record({ type: 'test.event', actor });
    const lazy = Array.from({ length: 20 }, (_, n) =>
      log.record({ type: 'session.connected', actor, connectorId: `con_${n}` }, { lazy: true }),
    );
    await urgent;
    await new Promise((resolve) => setTimeout(resolve, 60));
    const transactions = () =>
      db.query(`SELECT count(*)::int AS n FROM audit_events GROUP BY xmin::text ORDER BY min(seq)`);
    // Not sent on the heels of the urgent one's INSERT (a statement per round trip under a fleet).
    expect((await transactions()).rows.map((r) => r.n)).toEqual([1]);
    await Promise.all(lazy);
    expect((await transactions()).rows.map((r) => r.n)).toEqual([1, 20]);
    await log.close();
  });

  it('a failed INSERT refuses its events with AUDIT_NOT_WRITTEN and says why once; they are held and written with the next ones, in order', async () => {
    await using db = await auditDatabase();
    const errors: unknown[] = [];
    const recoveries: HeldAuditRecovery[] = [];
    const log = TableAuditLog.create(db.pool(), new ManualClock(), {
      onWriteError: (e) => errors.push(e),
      onRecovered: (r) => recoveries.push(r),
    });
    await log.record({ type: 'before.failure', actor });
    // The table gone for a while (a migration gone wrong, a restore under way): no fault of the events.
    await db.query(`ALTER TABLE audit_events RENAME TO audit_events_away`);
    for (const type of ['during.first', 'during.second'])
      await expect(log.record({ type, actor })).rejects.toMatchObject({
        reason: 'AUDIT_NOT_WRITTEN',
        message: expect.stringMatching(/42P01.*holds it in memory/),
      });
    expect(errors).toHaveLength(1);
    await db.query(`ALTER TABLE audit_events_away RENAME TO audit_events`);
    await log.record({ type: 'after.failure', actor });
    expect(recoveries).toEqual([expect.objectContaining({ written: 2, dropped: 0 })]);
    expect((await log.list()).map((e) => e.type)).toEqual([
      'after.failure',
      'during.second',
      'during.first',
      'before.failure',
    ]);
    await log.close();
  });

  it('events whose data the database refuses are told as lost, not held: they would hold back every event after them', async () => {
    await using db = await auditDatabase();
    const lost: number[] = [];
    const log = TableAuditLog.create(db.pool(), new ManualClock(), { onLost: (n) => lost.push(n) });
    // jsonb holds no NUL character (22P05): no retry would ever write this event.
    await expect(
      log.record({ type: 'refused.data', actor, details: { text: 'a\u0000b' } }),
    ).rejects.toMatchObject({
      reason: 'AUDIT_NOT_WRITTEN',
      message: expect.stringMatching(/refused its event \(22P05\): it is not in the audit log/),
    });
    expect(lost).toEqual([1]);
    await log.record({ type: 'after.refusal', actor });
    expect((await log.list()).map((e) => e.type)).toEqual(['after.refusal']);
    await log.close();
  });

  it('retention: by age, by rows, one replica at a time (the others skip while one holds the lock)', async () => {
    await using db = await auditDatabase();
    const clock = new ManualClock();
    const log = TableAuditLog.create(db.pool(), clock);
    for (let day = 0; day < 10; day++) {
      await log.record({ type: 'test.event', actor, details: { day } });
      await log.record({ type: 'test.event', actor, details: { day } });
      clock.advance(DAY_MS);
    }
    const days = async () => (await log.list({ limit: 100 })).map((e) => e.details.day);
    // Now is day 10: a 7-day retention keeps days 3 to 9 (day 3's events are exactly 7 days old).
    expect(await log.prune({ maxAgeMs: 7 * DAY_MS }, clock.now())).toBe(6);
    expect(await days()).toEqual([9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4, 3, 3]);
    expect(await log.prune({ maxRows: 3 }, clock.now())).toBe(11);
    expect(await days()).toEqual([9, 9, 8]);
    expect(await log.prune({ maxAgeMs: 7 * DAY_MS, maxRows: 3 }, clock.now())).toBe(0);

    await withClient(db.url, async (other) => {
      await other.query(`SELECT pg_advisory_lock(418581342580)`);
      expect(await log.prune({ maxRows: 0 }, clock.now())).toBeNull();
      await other.query(`SELECT pg_advisory_unlock(418581342580)`);
    });
    expect(await log.prune({ maxRows: 0 }, clock.now())).toBe(3);
    await log.close();
  });
});
