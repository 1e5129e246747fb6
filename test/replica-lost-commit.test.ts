import { afterEach, describe, expect, it } from 'vitest';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { replicasWithCutter } from './helpers/replicas.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * A replica whose connection drops as PostgreSQL commits its change, before the answer came (a
 * crash, a failover, a reset at the worst moment). It used to answer "nothing was changed", undo the
 * change in its memory, and keep that wrong copy for good: its own feed row does not bring its
 * changes back. Found by attacking a running deployment: a disabled connector was admitted as
 * enabled, and a deleted admin key kept working, through that replica only. Now the replica asks
 * the database what became of the transaction (pg_xact_status) and answers accordingly; only when
 * the database cannot be asked does it say "it may have been saved" and read everything again.
 */
/** The replica's whole-state loads so far (its /metrics). */
async function reloads(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^connector_store_feed_reloads_total (\d+)$/m.exec(text)?.[1] ?? Number.NaN);
}

describe('a commit whose answer is lost', () => {
  async function setup() {
    const { a, b, cutter } = await replicasWithCutter(cleanups);
    const group = await b!.admin.groups.create.mutate({ name: 'Lost answers' });
    const key = (await b!.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const enrolled = (await enrollSim(b!.url, key, 'lost-ack')).enrolled!;
    const { connectorId } = enrolled;
    await expect
      .poll(async () => (await a!.admin.connectors.get.query({ connectorId }).catch(() => null))?.status)
      .toBe('enabled');
    return { a: a!, b: b!, cutter, enrolled, connectorId };
  }

  it('committed: the replica asks the database, answers that it is saved and holds it (no reload)', async () => {
    const { a, b, cutter, enrolled, connectorId } = await setup();
    cutter.arm({ when: 'after' });
    const disabled = await a.admin.connectors.disable.mutate({ connectorId });
    expect(cutter.cut).toBe(1);
    expect(disabled).toMatchObject({ status: 'disabled', changed: true });
    expect((await a.admin.connectors.get.query({ connectorId })).status).toBe('disabled');
    expect((await b.admin.connectors.get.query({ connectorId })).status).toBe('disabled');
    const session = connectSim(a.url, enrolled);
    cleanups.push(() => session.close());
    expect(await session.waitFor('ready', 10_000)).toMatchObject({ status: 'disabled' });
    // Audited once, as any disable.
    const events = await a.admin.audit.list.query({ type: 'connector.disabled' });
    expect(events.filter((e) => e.connectorId === connectorId && e.outcome === 'success')).toHaveLength(1);
    await a.admin.connectors.enable.mutate({ connectorId });
    expect((await b.admin.connectors.get.query({ connectorId })).status).toBe('enabled');
    expect(await reloads(a.url)).toBe(0);
  });

  it('rolled back (the COMMIT never arrived): the replica answers that nothing was changed and holds that', async () => {
    const { a, b, cutter, connectorId } = await setup();
    cutter.arm({ when: 'before' });
    await expect(a.admin.connectors.disable.mutate({ connectorId })).rejects.toMatchObject({
      data: { reason: 'STORE_UNAVAILABLE' },
      message: expect.stringContaining('nothing was changed'),
    });
    expect(cutter.cut).toBe(1);
    expect((await a.admin.connectors.get.query({ connectorId })).status).toBe('enabled');
    expect((await b.admin.connectors.get.query({ connectorId })).status).toBe('enabled');
    // A retry goes through.
    await a.admin.connectors.disable.mutate({ connectorId });
    expect((await b.admin.connectors.get.query({ connectorId })).status).toBe('disabled');
    expect(await reloads(a.url)).toBe(0);
  });

  it('unknown (the database cannot be asked): the replica says it may have been saved, reads the database again, shows what was committed and audits it once it can ask', async () => {
    const { a, b, cutter, enrolled, connectorId } = await setup();
    // Longer than the replica asks (3 s): it has to call the outcome unknown.
    cutter.arm({ when: 'after', refuseNewForMs: 5000 });
    await expect(a.admin.connectors.disable.mutate({ connectorId })).rejects.toMatchObject({
      data: { reason: 'STORE_UNAVAILABLE', mayBeSaved: true },
      message: expect.stringContaining('it may have been saved'),
    });
    expect(cutter.cut).toBe(1);
    // It was: the database and the other replica have it.
    expect((await b.admin.connectors.get.query({ connectorId })).status).toBe('disabled');
    // A reads everything again within its feed's poll (once it reaches the database), and holds
    // what was committed.
    await expect
      .poll(async () => (await a.admin.connectors.get.query({ connectorId })).status, { timeout: 15_000 })
      .toBe('disabled');
    // Its connections all went with the cut: it takes sessions again once it is ready.
    await expect.poll(async () => (await fetch(`${a.url}/healthz`)).status, { timeout: 20_000 }).toBe(200);
    const session = connectSim(a.url, enrolled);
    cleanups.push(() => session.close());
    expect(await session.waitFor('ready', 10_000)).toMatchObject({ status: 'disabled' });
    // Asked on once the database answered: the disable is audited as saved after its answer.
    const disables = async () =>
      (await a.admin.audit.list.query({ type: 'connector.disabled' })).filter(
        (e) => e.connectorId === connectorId && e.outcome === 'success',
      );
    await expect.poll(disables, { timeout: 15_000 }).toHaveLength(1);
    expect((await disables())[0]?.details).toMatchObject({ savedAfterAnswer: true });
    // And it goes on committing.
    await a.admin.connectors.enable.mutate({ connectorId });
    expect((await b.admin.connectors.get.query({ connectorId })).status).toBe('enabled');
    expect(await reloads(a.url)).toBeGreaterThanOrEqual(1);
  });
});
