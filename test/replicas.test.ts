import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { ManualClock } from '../server/clock.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { freshDatabase, type TestDatabase, withClient } from './helpers/postgres.js';
import { repoRoot } from './helpers/processes.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function replicas(
  count: number,
  options: Parameters<typeof startReplicas>[2] = {},
): Promise<{ db: TestDatabase; servers: TestServer[] }> {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  const servers = await startReplicas(db.url, count, options);
  cleanups.push(() => stopAll(servers));
  return { db, servers };
}

async function groupKey(server: TestServer, name: string) {
  const group = await server.admin.groups.create.mutate({ name });
  const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
  return { group, key };
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
};

/** The SQL the README shows under `heading`: the first ```sql block after it. */
function readmeSql(heading: string): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README.md has no section "${heading}"`);
  const block = /```sql\n([\s\S]*?)```/.exec(readme.slice(start));
  if (!block) throw new Error(`README.md "${heading}" has no sql block`);
  return block[1] as string;
}

describe('several server replicas on one PostgreSQL (--database-url)', () => {
  it("the README's query lists each live replica with its sessions and a recent heartbeat", async () => {
    // C holds no session: it is listed all the same, with 0.
    const { db, servers } = await replicas(3);
    const [a, b] = servers as [TestServer, TestServer];
    const { key } = await groupKey(a, 'Counted');
    const sessions = [];
    for (const [server, count] of [
      [a, 3],
      [b, 2],
    ] as const)
      for (let i = 0; i < count; i++) {
        const enrolled = (await enrollSim(server.url, key, `${server === a ? 'a' : 'b'}-${i}`)).enrolled!;
        sessions.push(connectSim(server.url, enrolled));
      }
    await Promise.all(sessions.map((session) => session.waitFor('ready', 10_000)));
    const sql = readmeSql('### See which replicas are up');
    const listed = async () =>
      (
        await withClient(db.url, (client) =>
          client.query<{ id: string; ms_since_heartbeat: string; sessions: string; started: Date }>(sql),
        )
      ).rows;
    // Claims go out within ~50 ms of each session's start.
    for (let i = 0; i < 100; i++) {
      const rows = await listed();
      if (rows.map((r) => Number(r.sessions)).join() === '3,2,0') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const rows = await listed();
    // In start order: A first, with its three sessions; B with its two; C with none.
    expect(rows.map((r) => Number(r.sessions))).toEqual([3, 2, 0]);
    for (const row of rows) {
      expect(Number(row.ms_since_heartbeat)).toBeLessThan(15_000);
      expect(row.started).toBeInstanceOf(Date);
    }
    await Promise.all(sessions.map((session) => session.close()));
  });

  it('an admin call through B sees what the previous call changed through A, even with B deaf to notifications', async () => {
    // Behind a load balancer an admin's calls land on any replica: create a key on one, use it on
    // the next. B reads the change feed before each admin call, not only when woken.
    const { db, servers } = await replicas(2);
    const [a, b] = servers as [TestServer, TestServer];
    for (let round = 0; round < 3; round++) {
      // Every listening connection goes: until they reconnect (100 ms on), nobody is woken.
      await withClient(db.url, (c) =>
        c.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND query ILIKE 'LISTEN%'`,
        ),
      );
      const group = await a.admin.groups.create.mutate({ name: `Seen at once ${round}` });
      expect((await b.admin.groups.list.query({})).map((g) => g.id)).toContain(group.id);
      const made = await a.admin.apiKeys.create.mutate({ name: `made on A ${round}`, scope: 'admin' });
      const viaB = createAdminClient({ url: b.url, adminKey: made.key });
      expect((await viaB.groups.get.query({ groupId: group.id })).name).toBe(`Seen at once ${round}`);
    }
  });

  it('a provisioning key made through A enrolls through B at once, even with B deaf to notifications', async () => {
    const { db, servers } = await replicas(2);
    const [a, b] = servers as [TestServer, TestServer];
    const { group } = await groupKey(a, 'Fresh keys');
    for (let round = 0; round < 3; round++) {
      await withClient(db.url, (c) =>
        c.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND query ILIKE 'LISTEN%'`,
        ),
      );
      // An operator regenerates through one replica and starts an agent against another.
      const { key } = await a.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
      const enrolled = await enrollSim(b.url, key!, `fresh-${round}`);
      expect(enrolled.ok, JSON.stringify(enrolled)).toBe(true);
    }
  });

  it('share one state: a group made through A is listed, keyed and enrolled into through B', async () => {
    const { servers } = await replicas(2);
    const [a, b] = servers as [TestServer, TestServer];
    const { group, key } = await groupKey(a, 'Shared');
    const listed = await b.admin.groups.list.query({});
    expect(listed.map((g) => g.id)).toContain(group.id);
    const enrolled = await enrollSim(b.url, key, 'through-b');
    expect(enrolled.ok).toBe(true);
    // A session on B is seen as connected from A.
    const session = connectSim(b.url, enrolled.enrolled!);
    await session.waitFor('ready');
    await expect
      .poll(
        async () =>
          (await a.admin.connectors.get.query({ connectorId: enrolled.enrolled!.connectorId })).connection,
        {
          timeout: 10_000,
        },
      )
      .toBe('connected');
    // The audit log is one: B's enrollment is listed through A.
    const audit = await a.admin.audit.list.query({ type: 'enrollment.succeeded' });
    expect(audit.map((e) => e.connectorId)).toContain(enrolled.enrolled!.connectorId);
    await session.close();
  });

  it('a revoke through replica A closes the session on replica B: p99 of 100 within 1 s', async () => {
    const { servers } = await replicas(2);
    const [a, b] = servers as [TestServer, TestServer];
    const { key } = await groupKey(a, 'Fleet');
    const sessions = [];
    for (let i = 0; i < 100; i++) {
      // Each revoke regenerates the group's key: enroll them all first.
      const enrolled = (await enrollSim(b.url, key, `agent-${i}`)).enrolled!;
      sessions.push({ enrolled, session: connectSim(b.url, enrolled) });
    }
    await Promise.all(sessions.map(({ session }) => session.waitFor('ready', 30_000)));
    // From the call through A to the final event on B's socket (the agent then acknowledges and
    // B closes the socket; a test session does not acknowledge, so its close waits out that bound,
    // and so does A's answer, which waits for the confirmation: the calls are awaited at the end).
    const times: number[] = [];
    const calls: Array<Promise<{ termination: { state: string } | null }>> = [];
    for (const { enrolled, session } of sessions) {
      const started = performance.now();
      calls.push(a.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId }));
      await session.waitFor('revoked', 5000);
      times.push(performance.now() - started);
    }
    expect(percentile(times, 99)).toBeLessThan(1000);
    for (const answer of await Promise.all(calls)) expect(answer.termination?.state).toBe('pending');
    const closes = await Promise.all(sessions.map(({ session }) => session.waitForClose(5000)));
    expect(new Set(closes.map((c) => c.code))).toEqual(new Set([4003]));
    // And they stay out: a revoked identity is refused by either replica.
    const again = connectSim(a.url, sessions[0]!.enrolled);
    expect((await again.waitForClose(5000)).code).toBe(4001);
    // B timed each of A's 100 revokes from its transaction's start to its own apply (/metrics).
    const metrics = await (await fetch(`${b.url}/metrics`)).text();
    const lag = (name: string) =>
      Number(new RegExp(`^connector_store_feed_lag_seconds_${name} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(lag('count')).toBeGreaterThanOrEqual(100);
    expect(lag('sum') / lag('count')).toBeLessThan(1);
    expect(lag('sum')).toBeGreaterThan(0);
  });

  it("B's change-feed listener killed just before a revoke: B still closes the agent (catch-up)", async () => {
    const { db, servers } = await replicas(2);
    const [a, b] = servers as [TestServer, TestServer];
    const { key } = await groupKey(a, 'Catch-up');
    const enrolled = (await enrollSim(b.url, key, 'listened')).enrolled!;
    const session = connectSim(b.url, enrolled);
    await session.waitFor('ready');
    // Every LISTEN connection on the database: B's feed listener among them.
    await withClient(db.url, (c) =>
      c.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()`,
      ),
    );
    await a.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    await session.waitFor('revoked', 10_000);
    expect((await session.waitForClose(10_000)).code).toBe(4003);
  });

  it('no enrollment with the old key after a regenerate through another replica returned', async () => {
    const { servers } = await replicas(2);
    const [a, b] = servers as [TestServer, TestServer];
    const { group, key } = await groupKey(a, 'Race');
    // Enrollments through B race a regenerate through A.
    const racing = Array.from({ length: 20 }, (_, i) => enrollSim(b.url, key, `racer-${i}`));
    await a.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    const after = await Promise.all(Array.from({ length: 5 }, (_, i) => enrollSim(b.url, key, `late-${i}`)));
    for (const late of after) expect(late.reason).toBe('KEY_SUPERSEDED');
    const outcomes = await Promise.all(racing);
    for (const outcome of outcomes) expect(outcome.ok || outcome.reason === 'KEY_SUPERSEDED').toBe(true);
    // The key's use count is the enrollments that went through, seen from both replicas.
    const enrolledCount = outcomes.filter((o) => o.ok).length;
    const listed = await a.admin.connectors.list.query({ groupId: group.id, limit: 100 });
    expect(listed.items.length).toBe(enrolledCount);
  });

  it('identities renewed on A after a rotation: B counts them on the new key within ~1 s and retires the old one', async () => {
    const { servers } = await replicas(2, { config: { rotationSpreadMs: 200 } });
    const [a, b] = servers as [TestServer, TestServer];
    const { key } = await groupKey(a, 'Rotated');
    const sims = [];
    for (let i = 0; i < 3; i++) {
      const enrolled = (await enrollSim(a.url, key, `renewed-${i}`)).enrolled!;
      sims.push(connectSim(a.url, enrolled));
    }
    await Promise.all(sims.map((s) => s.waitFor('ready')));
    const oldKid = (await b.admin.signingKeys.list.query({})).find((k) => k.state === 'active')!.kid;
    expect((await b.admin.signingKeys.list.query({})).find((k) => k.kid === oldKid)?.identities).toBe(3);
    const rotated = await a.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    // A's hub renews its sessions with the new key; B holds none of them.
    await Promise.all(sims.map((s) => s.waitFor('identity', 8000)));
    const renewedAt = performance.now();
    await expect
      .poll(
        async () => (await b.admin.signingKeys.list.query({})).find((k) => k.kid === oldKid)?.identities,
        {
          timeout: 5000,
          interval: 50,
        },
      )
      .toBe(0);
    // The touch flush (1 s) and a notification: the bound is the flush, not B's next poll or restart.
    expect(performance.now() - renewedAt).toBeLessThan(2000);
    const listed = await b.admin.signingKeys.list.query({});
    expect(listed.find((k) => k.kid === rotated.key.kid)?.identities).toBe(3);
    const retired = await b.admin.signingKeys.retire.mutate({ kid: oldKid });
    expect(retired).toMatchObject({ key: { kid: oldKid, state: 'retired' }, identities: 0 });
    await Promise.all(sims.map((s) => s.close()));
  });

  it('prunes the change feed by itself once its rows are past the maximum age, and counts them in /metrics', async () => {
    const clock = new ManualClock(Date.now());
    const { db, servers } = await replicas(1, { clock });
    const [a] = servers as [TestServer];
    await groupKey(a, 'Pruned');
    const rows = () =>
      withClient(db.url, async (c) =>
        Number((await c.query('SELECT count(*) FROM store_changes')).rows[0].count),
      );
    expect(await rows()).toBeGreaterThan(0);
    clock.advance(2 * 60 * 60_000);
    // The replica's own upkeep (every 5 s) finds a prune due and removes every row.
    await expect.poll(rows, { timeout: 12_000, interval: 200 }).toBe(0);
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_store_feed_rows_pruned_total [1-9]/m);
  });
});
