import { afterEach, describe, expect, it } from 'vitest';
import { connectSim, enrollSim, type SimSession } from './helpers/agent-sim.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A group force-deleted through one replica: its agents, spread over all three, each hear `deleted`
 * (and so wipe and stop) before their socket closes, rather than a bare close they would retry after.
 * The replicas bench saw deleted groups' agents reconnect and be refused CONNECTOR_NOT_FOUND under
 * load; this pins down that the path itself delivers the event.
 */
describe('a group deleted through one replica, its agents on all of them', () => {
  it('every agent hears "deleted" before its socket closes, as on one server', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const servers = await startReplicas(db.url, 3);
    cleanups.push(() => stopAll(servers));
    const [a] = servers as [TestServer, TestServer, TestServer];
    const group = await a.admin.groups.create.mutate({ name: 'Doomed' });
    const sessions: SimSession[] = [];
    for (let i = 0; i < 150; i++) {
      const b = servers[i % 3] as TestServer;
      const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
      const enrolled = await enrollSim(b.url, key, `doomed-${i}`);
      expect(enrolled.ok).toBe(true);
      const session = connectSim(b.url, enrolled.enrolled!);
      await session.waitFor('ready');
      sessions.push(session);
    }
    await a.admin.groups.delete.mutate({ groupId: group.id, force: true });
    for (const session of sessions) {
      const close = await session.waitForClose(10_000);
      const types = session.events.map((event) => event.type);
      expect({ types, close }).toMatchObject({ types: expect.arrayContaining(['deleted']) });
    }
  });
});
