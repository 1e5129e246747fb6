import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, type Enrolled, enrollSim, type SimSession } from './helpers/agent-sim.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

describe('--max-sessions-per-address with replicas', () => {
  it('is a limit per replica: each holds its share from one address, so two hold twice the limit', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const servers = await startReplicas(db.url, 2, { config: { maxSessionsPerAddress: 2 } });
    cleanups.push(() => stopAll(servers));
    const [a, b] = servers as [TestServer, TestServer];
    const group = await a.admin.groups.create.mutate({ name: 'Behind one NAT' });
    const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const enrolled: Enrolled[] = [];
    for (let i = 0; i < 6; i++) enrolled.push((await enrollSim(a.url, key, `nat-${i}`)).enrolled!);
    const open: SimSession[] = [];
    cleanups.push(() => Promise.all(open.map((s) => s.close())));
    const connect = (server: TestServer, i: number) => {
      const session = connectSim(server.url, enrolled[i]!);
      open.push(session);
      return session;
    };

    // Two from 127.0.0.1 on A, the third refused there...
    await connect(a, 0).waitFor('ready');
    const second = connect(a, 1);
    await second.waitFor('ready');
    expect(await connect(a, 2).waitForClose()).toEqual({
      code: CLOSE_CODES.RATE_LIMITED,
      reason: 'RATE_LIMITED',
    });
    // ...while B, which A's sessions do not count against, takes two more from the same address.
    await connect(b, 2).waitFor('ready');
    await connect(b, 3).waitFor('ready');
    expect(await connect(b, 4).waitForClose()).toEqual({
      code: CLOSE_CODES.RATE_LIMITED,
      reason: 'RATE_LIMITED',
    });
    // Every replica sees all four as connected.
    await expect
      .poll(
        async () =>
          (await b.admin.connectors.list.query({ connection: 'connected', limit: 100 })).items.length,
        {
          timeout: 10_000,
        },
      )
      .toBe(4);
    // A slot freed on A is A's again.
    await second.close();
    await expect.poll(async () => a.server.hub.size, { timeout: 10_000 }).toBe(1);
    await connect(a, 5).waitFor('ready', 10_000);
  });
});
