import { connect, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PgStore } from '../server/store/postgres/pg-store.js';
import { ChangeUnconfirmed } from '../server/store/store.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { freshDatabase, startPostgres, withClient } from './helpers/postgres.js';
import { realTimeClock, startTestServer } from './helpers/server.js';
import { groupRecord } from './helpers/store-contract.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

describe('PgStore durability', () => {
  it('acknowledged = committed: a resolved transaction survives a crash of PostgreSQL right after it; one whose commit failed is undone in memory', async () => {
    const cluster = await startPostgres();
    cleanups.push(() => cluster[Symbol.asyncDispose]());
    const store = await PgStore.open(cluster.url, { pollMs: 200 });
    cleanups.push(() => store.close());
    await store.transact((tx) => tx.put('groups', groupRecord('before-crash')));
    // Resolved: PostgreSQL said COMMIT. Crash it at once (SIGKILL: no shutdown checkpoint).
    await cluster.kill();

    const failed = store.transact((tx) => {
      tx.put('groups', groupRecord('during-crash'));
      tx.patch('groups', 'before-crash', { name: 'renamed-during-crash' });
    });
    // Applied at once, as always...
    expect(store.read((v) => v.get('groups', 'during-crash'))).toBeDefined();
    // ...then refused and undone when the commit cannot be made.
    await expect(failed).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    expect(store.read((v) => v.list('groups'))).toEqual([groupRecord('before-crash')]);

    await cluster.start();
    // The same store recovers by itself: its pool connects again.
    await store.transact((tx) => tx.put('groups', groupRecord('after-restart')));
    const reopened = await PgStore.open(cluster.url);
    cleanups.push(() => reopened.close());
    expect(reopened.read((v) => v.list('groups').map((g) => g.name)).sort()).toEqual([
      'after-restart',
      'before-crash',
    ]);
  });

  it('a database that stops answering: the caller hears within the bound that the change may still be saved, and it is once the database answers', async () => {
    await using db = await freshDatabase();
    const relay = await stallableRelay(db.url);
    const store = await PgStore.open(relay.url, { pollMs: 200, commitWaitMs: 500 });
    cleanups.push(() => store.close());
    await store.transact((tx) => tx.put('groups', groupRecord('before-stall')));

    relay.stall();
    const started = Date.now();
    const refusal = await store
      .transact((tx) => {
        tx.put('groups', groupRecord('during-stall'));
        return 'its result';
      })
      .catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(ChangeUnconfirmed);
    expect(refusal).toMatchObject({
      reason: 'STORE_UNAVAILABLE',
      message: expect.stringContaining('it may still be saved when the database answers'),
      details: { mayBeSaved: true },
    });
    expect(Date.now() - started).toBeLessThan(5_000);

    relay.resume();
    // What became of it reaches whoever must audit it, with the transaction's result.
    await expect((refusal as ChangeUnconfirmed).landed).resolves.toEqual({
      saved: true,
      result: 'its result',
    });
    const saved = async () =>
      withClient(db.url, async (c) =>
        Number(
          (await c.query(`SELECT count(*) AS n FROM store_records WHERE id = 'during-stall'`)).rows[0].n,
        ),
      );
    for (let i = 0; i < 100 && (await saved()) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await saved()).toBe(1);
    await store.transact((tx) => tx.put('groups', groupRecord('after-stall')));
    expect(store.read((v) => v.list('groups').map((g) => g.id)).sort()).toEqual([
      'after-stall',
      'before-stall',
      'during-stall',
    ]);
  });

  it('a server on a database that stops answering answers an admin change STORE_UNAVAILABLE after the commit bound, not later', async () => {
    await using db = await freshDatabase();
    const relay = await stallableRelay(db.url);
    const server = await startTestServer({ clock: realTimeClock(), config: { databaseUrl: relay.url } });
    cleanups.push(() => server.stop());
    await server.admin.groups.create.mutate({ name: 'Before' });

    relay.stall();
    const started = performance.now();
    // The refusal's own audit record cannot be written either: it used to hold the answer until
    // the connection gave up (22 s against a frozen PostgreSQL; for ever through this relay).
    const answer = await Promise.race([
      server.admin.groups.create.mutate({ name: 'During' }).then(
        () => 'saved',
        (error: { data?: { reason?: string } }) => error.data?.reason ?? String(error),
      ),
      new Promise((resolve) => setTimeout(() => resolve('no answer within 30 s'), 30_000)),
    ]);
    const tookMs = performance.now() - started;
    expect(answer).toBe('STORE_UNAVAILABLE');
    // The bound (10 s) plus the change feed read before the call (≤ 1 s) and the refusal's
    // record (≤ 1 s), with room for a loaded machine.
    expect(tookMs).toBeGreaterThanOrEqual(10_000);
    expect(tookMs).toBeLessThan(16_000);
    relay.resume();
  });

  it('a revoke and a disable the database does not confirm in time say they may still be saved (not that nothing changed); once they land they are audited and the disabled agent is told', async () => {
    await using db = await freshDatabase();
    const server = await startTestServer({ clock: realTimeClock(), config: { databaseUrl: db.url } });
    cleanups.push(() => server.stop());
    const group = await server.admin.groups.create.mutate({ name: 'Slow revoke' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const enrolled = (await enrollSim(server.url, key, 'slow')).enrolled!;
    const other = (await enrollSim(server.url, key, 'slow-disable')).enrolled!;
    const session = connectSim(server.url, enrolled);
    const otherSession = connectSim(server.url, other);
    cleanups.push(
      () => session.close(),
      () => otherSession.close(),
    );
    await session.waitFor('ready', 10_000);
    await otherSession.waitFor('ready', 10_000);

    // Another session of the database holds both connectors' rows for 15 s: the commit waits on
    // them inside PostgreSQL, past the 10 s the callers wait (each call reads the feed first, up to
    // a second: on a loaded machine the commit may start seconds after the lock), then goes through.
    let held: () => void = () => {};
    const holding = new Promise<void>((resolve) => {
      held = resolve;
    });
    const locked = withClient(db.url, async (c) => {
      await c.query('BEGIN');
      await c.query(`SELECT 1 FROM store_records WHERE section = 'connectors' AND id = ANY($1) FOR UPDATE`, [
        [enrolled.connectorId, other.connectorId],
      ]);
      held();
      await new Promise((resolve) => setTimeout(resolve, 15_000));
      await c.query('COMMIT');
    });
    await holding;
    type Refusal = { message: string; data?: { reason?: string; mayBeSaved?: boolean } };
    const [refused, disableRefused] = await Promise.all([
      server.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId }).then(
        () => null,
        (error: Refusal) => error,
      ),
      server.admin.connectors.disable.mutate({ connectorId: other.connectorId }).then(
        () => null,
        (error: Refusal) => error,
      ),
    ]);
    expect(disableRefused?.data).toMatchObject({ reason: 'STORE_UNAVAILABLE', mayBeSaved: true });
    expect(refused?.data).toMatchObject({ reason: 'REVOKE_NOT_SAVED', mayBeSaved: true });
    expect(refused?.message).toContain(
      'the database has not confirmed the revocation: it may still be saved',
    );
    expect(refused?.message).not.toContain('still reads not revoked');
    // The agent was told at once (security first), and the change lands once the lock is gone.
    await session.waitFor('revoked', 5000);
    await locked;
    await expect
      .poll(
        async () => (await server.admin.connectors.get.query({ connectorId: enrolled.connectorId })).status,
        {
          timeout: 10_000,
        },
      )
      .toBe('revoked');

    // Saved after the callers heard: the disabled agent is told as after any disable, and both
    // changes are in the audit log as done (the revoke also as refused: its agent was cut off).
    expect(await otherSession.waitFor('status', 10_000)).toMatchObject({
      status: 'disabled',
      scope: 'connector',
    });
    const audited = async (type: string, connectorId: string) =>
      (await server.admin.audit.list.query({ type })).filter(
        (event) => event.connectorId === connectorId && event.outcome === 'success',
      );
    await expect
      .poll(() => audited('connector.revoked', enrolled.connectorId), { timeout: 5000 })
      .toHaveLength(1);
    expect((await audited('connector.revoked', enrolled.connectorId))[0]?.details).toMatchObject({
      savedAfterAnswer: true,
    });
    await expect
      .poll(() => audited('connector.disabled', other.connectorId), { timeout: 5000 })
      .toHaveLength(1);
    expect((await audited('connector.disabled', other.connectorId))[0]?.details).toMatchObject({
      savedAfterAnswer: true,
    });
  });
});

/**
 * A TCP relay to PostgreSQL that can stall: while stalled it holds every byte in both directions
 * (a frozen database, a network that stopped carrying), and delivers them in order on resume.
 */
async function stallableRelay(url: string) {
  const target = new URL(url);
  const sockets = new Set<Socket>();
  let stalled = false;
  const held: Array<[Socket, Buffer]> = [];
  const forward = (from: Socket, to: Socket) =>
    from.on('data', (chunk: Buffer) => (stalled ? held.push([to, chunk]) : to.write(chunk)));
  const server = createServer((inbound) => {
    const outbound = connect(Number(target.port), target.hostname);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
      s.on('error', () => s.destroy());
    }
    forward(inbound, outbound);
    forward(outbound, inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const relayed = new URL(url);
  relayed.port = String((server.address() as { port: number }).port);
  return {
    url: relayed.toString(),
    stall() {
      stalled = true;
    },
    resume() {
      stalled = false;
      for (const [to, chunk] of held.splice(0)) to.write(chunk);
    },
  };
}
