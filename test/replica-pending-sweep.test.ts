import { afterEach, describe, expect, it } from 'vitest';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually, waitConnected } from './helpers/agents.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import { realTimeClock, type TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

const HOUR_MS = 3_600_000;

describe('the pending sweep on a replica that never held the session', () => {
  it('keeps a connector that connected through another replica, once it is offline and older than --pending-ttl; a never-connected one goes', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    // Real time, moved on by the test: the sweep compares enrolledAt with now less the TTL.
    const clock = realTimeClock();
    let ahead = 0;
    clock.now = () => Date.now() + ahead;
    const servers = await startReplicas(db.url, 2, { clock, config: { pendingTtlMs: HOUR_MS } });
    cleanups.push(() => stopAll(servers));
    const [a, b] = servers as [TestServer, TestServer];
    const group = await a.admin.groups.create.mutate({ name: 'Sweep' });
    const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;

    const host = (await enrollSim(b.url, key, 'on-b')).enrolled!;
    const never = (await enrollSim(b.url, key, 'never-connected')).enrolled!;
    const session = connectSim(b.url, host);
    await session.waitFor('ready');
    await waitConnected(a.admin, 'on-b', 10_000);
    // A's copy learns of the first connect (through the feed), not only of the live session.
    await eventually(
      'A knows on-b has connected',
      async () => (await a.admin.connectors.get.query({ connectorId: host.connectorId })).lastConnectedAt,
      10_000,
    );
    await session.close();
    await eventually(
      'A shows on-b offline',
      async () =>
        (await a.admin.connectors.get.query({ connectorId: host.connectorId })).connection !== 'connected',
      10_000,
    );

    ahead = 2 * HOUR_MS;
    // Each replica sweeps on its own timer; here the test runs A's, then B's.
    expect(await a.server.sweepPending()).toEqual([never.connectorId]);
    expect(await b.server.sweepPending()).toEqual([]);
    for (const replica of [a, b]) {
      const listed = await replica.admin.connectors.list.query({ groupId: group.id });
      expect(listed.items.map((c) => c.name)).toEqual(['on-b']);
    }
  });
});
