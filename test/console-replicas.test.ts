import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { type ConsoleBatch, openConsole } from './helpers/console.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function twoReplicas(): Promise<[TestServer, TestServer]> {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  const servers = await startReplicas(db.url, 2);
  cleanups.push(() => stopAll(servers));
  return servers as [TestServer, TestServer];
}

const naming = (kind: 'groups' | 'connectors', id: string) => (batch: ConsoleBatch) =>
  batch[kind].includes(id);

describe('console.changes across replicas (--database-url)', () => {
  it('a console on A hears of changes made through B and of sessions on B; a key deleted through B closes it', async () => {
    const [a, b] = await twoReplicas();
    const viewer = await b.admin.apiKeys.create.mutate({ name: 'viewer', scope: 'read' });
    const feed = openConsole(a.url, viewer.key);
    await feed.started;

    const group = await b.admin.groups.create.mutate({ name: 'Made on B' });
    await feed.waitForBatch(naming('groups', group.id));
    const key = (await b.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = (await enrollSim(b.url, key, 'on-b')).enrolled!;
    await feed.waitForBatch(naming('connectors', enrolled.connectorId));

    // A session on B touches no record: A hears of it from B's claim.
    let from = feed.batches.length;
    const session = connectSim(b.url, enrolled);
    await session.waitFor('ready');
    await feed.waitForBatch(naming('connectors', enrolled.connectorId), 5000, from);
    expect((await a.admin.connectors.get.query({ connectorId: enrolled.connectorId })).connection).toBe(
      'connected',
    );
    from = feed.batches.length;
    await session.close();
    await feed.waitForBatch(naming('connectors', enrolled.connectorId), 5000, from);

    await b.admin.apiKeys.delete.mutate({ id: viewer.id });
    expect(await feed.waitForClose()).toEqual({
      code: CLOSE_CODES.REFUSED,
      reason: 'ADMIN_KEY_INVALID deleted',
    });
    await feed.close();
  });
});
