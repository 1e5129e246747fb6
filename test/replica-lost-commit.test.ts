import { afterEach, describe, expect, it } from 'vitest';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { startCommitCutter } from './helpers/commit-cutter.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A replica whose connection drops after PostgreSQL committed its change, before the answer came
 * (a crash, a failover, a reset at the worst moment). It used to answer "nothing was changed",
 * undo the change in its memory, and keep that wrong copy for good: its own feed row does not bring
 * its changes back. Found by attacking a running deployment: a disabled connector was admitted as
 * enabled, and a deleted admin key kept working, through that replica only.
 */
describe('a commit whose answer is lost', () => {
  it('the replica says it may have been saved, reads the database again and shows what was committed', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const cutter = await startCommitCutter(db.url);
    cleanups.push(() => cutter.close());
    const [b] = await startReplicas(db.url, 1);
    const [a] = await startReplicas(cutter.url, 1, { joining: b! });
    cleanups.push(() => stopAll([a!, b!]));
    const group = await b!.admin.groups.create.mutate({ name: 'Lost answers' });
    const key = (await b!.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const enrolled = (await enrollSim(b!.url, key, 'lost-ack')).enrolled!;
    const { connectorId } = enrolled;
    await expect
      .poll(async () => (await a!.admin.connectors.get.query({ connectorId }).catch(() => null))?.status)
      .toBe('enabled');

    cutter.arm();
    await expect(a!.admin.connectors.disable.mutate({ connectorId })).rejects.toMatchObject({
      data: { reason: 'STORE_UNAVAILABLE' },
      message: expect.stringContaining('it may have been saved'),
    });
    expect(cutter.cut).toBe(1);
    // It was: the database and the other replica have it.
    expect((await b!.admin.connectors.get.query({ connectorId })).status).toBe('disabled');
    // A reads everything again within its feed's poll, and holds what was committed.
    await expect
      .poll(async () => (await a!.admin.connectors.get.query({ connectorId })).status, { timeout: 10_000 })
      .toBe('disabled');
    const session = connectSim(a!.url, enrolled);
    cleanups.push(() => session.close());
    expect(await session.waitFor('ready', 10_000)).toMatchObject({ status: 'disabled' });
    // And it goes on committing.
    await a!.admin.connectors.enable.mutate({ connectorId });
    expect((await b!.admin.connectors.get.query({ connectorId })).status).toBe('enabled');
  });
});
