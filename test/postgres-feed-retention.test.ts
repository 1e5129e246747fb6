import { connect, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { FEED_PRUNE_LOCK } from '../server/store/postgres/feed-retention.js';
import { migrateToLatest } from '../server/store/postgres/migrate.js';
import {
  type PgStore,
  type PgStoreOptions,
  type RemoteChange,
  PgStore as Store,
} from '../server/store/postgres/pg-store.js';
import { freshDatabase, startPostgres, withClient } from './helpers/postgres.js';
import { groupRecord } from './helpers/store-contract.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

const MINUTE = 60_000;

async function database(): Promise<string> {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  return db.url;
}

/**
 * A replica with the default retention (10 minutes, at most 1 hour) on `clock`; its periodic upkeep
 * is left to the test (`feedUpkeep.run()` after moving the clock).
 */
async function replica(url: string, clock: ManualClock, options: Partial<PgStoreOptions> = {}) {
  const heard: RemoteChange[] = [];
  const store = await Store.open(url, {
    clock,
    pollMs: 200,
    feedReportMs: 600_000,
    onRemoteChange: (changes) => heard.push(...changes),
    ...options,
  });
  cleanups.push(() => store.close());
  return { store, heard };
}

/** A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones refused) and restored. */
async function cuttableRelay(url: string) {
  const target = new URL(url);
  const sockets = new Set<Socket>();
  let cut = false;
  const server = createServer((inbound) => {
    if (cut) return inbound.destroy();
    const outbound = connect(Number(target.port), target.hostname);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      // One half gone, the other goes too: a client must not wait on a connection that leads nowhere.
      s.on('close', () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
      s.on('error', () => s.destroy());
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // Its sockets go first: server.close waits for every connection, and a pair whose other half
  // is gone could hold it (one full run timed out in this file's afterEach, 120 s).
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const relayed = new URL(url);
  relayed.port = String((server.address() as { port: number }).port);
  return {
    url: relayed.toString(),
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
    },
    restore() {
      cut = false;
    },
  };
}

/**
 * A TCP relay to one PostgreSQL and then another (a failover), whose connections can be refused for
 * a while; a switch drops every connection, as a failover does.
 */
async function failoverRelay(url: string) {
  let target = new URL(url);
  const sockets = new Set<Socket>();
  let refusing = false;
  const server = createServer((inbound) => {
    if (refusing) return inbound.destroy();
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
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const relayed = new URL(url);
  relayed.hostname = '127.0.0.1';
  relayed.port = String((server.address() as { port: number }).port);
  return {
    url: relayed.toString(),
    /** Every connection dropped; new ones go to `to`, or are refused until `accept` with `refuse`. */
    switchTo(to: string, { refuse = false } = {}) {
      target = new URL(to);
      refusing = refuse;
      for (const s of sockets) s.destroy();
    },
    accept() {
      refusing = false;
    },
  };
}

async function feedRows(url: string): Promise<number> {
  return withClient(url, async (c) =>
    Number((await c.query('SELECT count(*) FROM store_changes')).rows[0].count),
  );
}

async function untilAsync(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const groups = (store: PgStore) =>
  store.read((v) =>
    v
      .list('groups')
      .map((g) => `${g.id}:${g.status}`)
      .sort(),
  );

describe('change feed retention', () => {
  it('PostgreSQL failed over to a standby that was behind (its transaction ids too): a change committed there before a replica reads it again is not skipped', async () => {
    const url = await database();
    const name = new URL(url).pathname.slice(1);
    await using standby = await startPostgres();
    const standbyUrl = new URL(url);
    standbyUrl.port = new URL(standby.url).port;
    standbyUrl.hostname = new URL(standby.url).hostname;
    await withClient(standby.url, (c) => c.query(`CREATE DATABASE ${name}`));
    await withClient(standbyUrl.toString(), migrateToLatest);
    const [toA, toB] = [await failoverRelay(url), await failoverRelay(url)];
    const clock = new ManualClock(Date.now());
    const a = await replica(toA.url, clock);
    const b = await replica(toB.url, clock);
    await b.store.transact((tx) => tx.put('groups', groupRecord('g0')));
    await until(() => groups(a.store).includes('g0:enabled'));
    // The primary has handed out transaction ids the standby never saw (it lags, asynchronously):
    // the replicas' feed positions are past every id the standby will hand out for a while.
    const xid = async (to: string) =>
      withClient(to, async (c) =>
        Number((await c.query('SELECT pg_current_xact_id()::text AS x')).rows[0].x),
      );
    const burn = (await xid(standby.url)) + 2000 - (await xid(url));
    await withClient(url, async (c) => {
      await c.query(`CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
                     BEGIN FOR i IN 1..n LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$`);
      if (burn > 0) await c.query(`CALL burn(${burn})`);
    });
    await Promise.all([a.store.feed.readNow(), b.store.feed.readNow()]);
    // What the standby holds when it is promoted: the records (its sequence ahead, as WAL logs it).
    const records = await withClient(url, async (c) => (await c.query('SELECT * FROM store_records')).rows);
    const lastSeq = await withClient(url, async (c) =>
      Number((await c.query('SELECT last_value FROM store_changes_seq_seq')).rows[0].last_value),
    );
    await withClient(standbyUrl.toString(), async (c) => {
      for (const r of records)
        await c.query('INSERT INTO store_records (section, id, body, version) VALUES ($1, $2, $3, $4)', [
          r.section,
          r.id,
          r.body,
          r.version,
        ]);
      await c.query(`SELECT setval('store_changes_seq_seq', $1)`, [lastSeq + 100]);
    });

    // The failover: B reaches the new primary first and commits; A is back a moment later.
    toA.switchTo(standbyUrl.toString(), { refuse: true });
    toB.switchTo(standbyUrl.toString());
    for (let i = 0; ; i++) {
      try {
        await b.store.transact((tx) => tx.patch('groups', 'g0', { status: 'disabled' }));
        break;
      } catch (error) {
        if (i >= 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    toA.accept();
    await until(() => groups(a.store).includes('g0:disabled'), 8000);
  });

  it('prunes the rows every live replica has read once older than the retention; a replica that read them all misses nothing', async () => {
    const url = await database();
    const clock = new ManualClock(Date.now());
    const a = await replica(url, clock);
    const b = await replica(url, clock);
    for (let i = 0; i < 5; i++) await a.store.transact((tx) => tx.put('groups', groupRecord(`g${i}`)));
    await until(() => groups(b.store).length === 5);
    await b.store.feed.readNow();
    await b.store.feedUpkeep.run();
    expect(await feedRows(url)).toBe(5);
    // Younger than the retention: kept.
    clock.advance(5 * MINUTE);
    expect(await a.store.feedUpkeep.prune()).toBe(0);
    clock.advance(6 * MINUTE);
    // Positions are snapshot xmins, cluster-wide: a transaction of another test may hold them back a
    // moment, so read, report and prune again until both are past the rows. The clock stays put:
    // moved a minute a round, a slow wait passed the maximum age (1 h), which prunes rows whether
    // read or not, and B reloaded.
    await untilAsync(async () => {
      for (const { store } of [a, b]) await store.feed.readNow();
      for (const { store } of [a, b]) await store.feedUpkeep.run(); // reports its position
      await a.store.feedUpkeep.prune();
      return a.store.feedUpkeep.pruned === 5;
    });
    expect(await feedRows(url)).toBe(0);
    // The feed goes on: a change after the prune reaches B as usual, no reload.
    await a.store.transact((tx) => tx.patch('groups', 'g0', { status: 'disabled' }));
    await until(() => groups(b.store).includes('g0:disabled'));
    expect(b.store.stats.reloads).toBe(0);
    expect(b.heard.filter((c) => c.id === 'g0').map((c) => (c.after as { status: string }).status)).toEqual([
      'enabled',
      'disabled',
    ]);
  });

  it('one replica prunes at a time: while the lock is held elsewhere a prune skips its turn', async () => {
    const url = await database();
    const clock = new ManualClock(Date.now());
    const a = await replica(url, clock);
    await a.store.transact((tx) => tx.put('groups', groupRecord('g')));
    clock.advance(2 * 60 * MINUTE);
    await withClient(url, async (c) => {
      await c.query('SELECT pg_advisory_lock($1::bigint)', [FEED_PRUNE_LOCK]);
      expect(await a.store.feedUpkeep.prune()).toBeNull();
      await c.query('SELECT pg_advisory_unlock($1::bigint)', [FEED_PRUNE_LOCK]);
    });
    expect(await a.store.feedUpkeep.prune()).toBe(1);
  });

  it('a replica cut off holds the rows it has not read until the maximum age; back after they were pruned, it loads the whole state again', async () => {
    const url = await database();
    const clock = new ManualClock(Date.now());
    const a = await replica(url, clock);
    await a.store.transact((tx) => {
      tx.put('groups', groupRecord('kept'));
      tx.put('groups', groupRecord('changed'));
      tx.put('groups', groupRecord('deleted'));
    });
    const relay = await cuttableRelay(url);
    const b = await replica(relay.url, clock, { pollMs: 100 });
    expect(groups(b.store)).toEqual(['changed:enabled', 'deleted:enabled', 'kept:enabled']);
    await b.store.feedUpkeep.run();

    relay.cut();
    await a.store.transact((tx) => {
      tx.patch('groups', 'changed', { status: 'disabled' });
      tx.delete('groups', 'deleted');
      tx.put('groups', groupRecord('new'));
    });
    await a.store.feed.readNow();
    // Past the retention, within the maximum age: B is live for the pruner and has not read the
    // change, so it stays (the first row, read by both, may go).
    clock.advance(11 * MINUTE);
    await a.store.feedUpkeep.run();
    expect(a.store.feedUpkeep.pruned).toBeLessThanOrEqual(1);
    const unread = await withClient(url, (c) =>
      c.query(`SELECT 1 FROM store_changes WHERE ops @> '[{"id": "new"}]'`),
    );
    expect(unread.rowCount).toBe(1);
    // Past the maximum age: B no longer holds it back.
    clock.advance(50 * MINUTE);
    await a.store.feedUpkeep.run();
    expect(await feedRows(url)).toBe(0);
    const readers = await withClient(url, (c) => c.query('SELECT origin FROM store_feed_readers'));
    expect(readers.rows.map((r) => r.origin)).toEqual([a.store.origin]);

    relay.restore();
    await until(() => b.store.stats.reloads === 1, 15_000);
    expect(groups(b.store)).toEqual(['changed:disabled', 'kept:enabled', 'new:enabled']);
    // The sessions hear of what it missed, as of any other replica's change.
    expect(
      b.heard.map((c) => `${c.id}:${(c.after as { status?: string } | undefined)?.status ?? 'gone'}`).sort(),
    ).toEqual(['changed:disabled', 'deleted:gone', 'new:enabled']);
    // And it follows the feed again.
    await a.store.transact((tx) => tx.patch('groups', 'kept', { status: 'disabled' }));
    await until(() => groups(b.store).includes('kept:disabled'));
    expect(b.store.stats.reloads).toBe(1);
  });

  it("a database restored into a cluster behind it in transaction ids: a replica forgets that cluster's feed at start, and the feed goes on", async () => {
    const url = await database();
    const clock = new ManualClock(Date.now());
    const a = await replica(url, clock, { feedReportMs: 10 });
    for (let i = 0; i < 3; i++) await a.store.transact((tx) => tx.put('groups', groupRecord(`g${i}`)));
    await a.store.feed.readNow();
    await a.store.feedUpkeep.run();
    await a.store.close();
    // What pg_restore into a younger cluster leaves: feed rows, a reader's position and a horizon
    // ahead of every transaction id the cluster will hand out for a long time.
    const ahead = `(pg_current_xact_id()::text::bigint + 1000000)::text::xid8`;
    await withClient(url, async (c) => {
      await c.query(`UPDATE store_changes SET xid = ${ahead}`);
      await c.query(
        `INSERT INTO store_feed_readers (origin, read_xmin, heartbeat_at) VALUES ('gone', ${ahead}, $1)`,
        [clock.now()],
      );
      await c.query(`UPDATE store_feed_horizon SET pruned_through = ${ahead}`);
      // The dump's replica, its heartbeat seconds old, and the agent session it held.
      await c.query(
        `INSERT INTO replicas (id, url, started_at, heartbeat_at) VALUES ('dumped', 'http://old:7420', $1, $1);
         INSERT INTO agent_sessions (connector_id, replica_id, session_id, remote_address, connected_at)
           VALUES ('con_1', 'dumped', nextval('agent_session_claims'), '192.0.2.1', $1)`.replaceAll(
          '$1',
          String(clock.now() - 2000),
        ),
      );
    });
    const warnings: Array<{ details: object; message: string }> = [];
    const b = await replica(url, clock, {
      logger: { warn: (details, message) => warnings.push({ details, message }) },
    });
    expect(groups(b.store)).toEqual(['g0:enabled', 'g1:enabled', 'g2:enabled']);
    expect(warnings).toEqual([
      {
        details: { changes: 3, readers: 1, horizonLowered: true, replicas: 1, sessions: 1 },
        message: expect.stringContaining('restored from another PostgreSQL cluster'),
      },
    ]);
    const left = await withClient(
      url,
      async (c) =>
        (
          await c.query(
            `SELECT (SELECT count(*) FROM store_changes)::int AS changes,
                  (SELECT count(*) FROM store_feed_readers WHERE read_xmin > pg_current_xact_id())::int AS readers,
                  (SELECT pruned_through < pg_current_xact_id() FROM store_feed_horizon) AS horizon_behind,
                  (SELECT count(*) FROM replicas)::int AS replicas,
                  (SELECT count(*) FROM agent_sessions)::int AS sessions`,
          )
        ).rows[0],
    );
    expect(left).toEqual({ changes: 0, readers: 0, horizon_behind: true, replicas: 0, sessions: 0 });
    // A second replica finds nothing to forget, and leaves the replicas of this cluster alone;
    // changes flow both ways without a reload.
    await withClient(url, (c) =>
      c.query(
        `INSERT INTO replicas (id, url, started_at, heartbeat_at) VALUES ('live', 'http://b:7420', $1, $1)`,
        [clock.now()],
      ),
    );
    const c = await replica(url, clock);
    expect(
      await withClient(url, async (client) =>
        (await client.query('SELECT id FROM replicas')).rows.map((r) => r.id),
      ),
    ).toEqual(['live']);
    await c.store.transact((tx) => tx.patch('groups', 'g1', { status: 'disabled' }));
    await until(() => groups(b.store).includes('g1:disabled'));
    await b.store.transact((tx) => tx.put('groups', groupRecord('g3')));
    await until(() => groups(c.store).includes('g3:enabled'));
    expect(warnings).toHaveLength(1);
    expect([b.store.stats.reloads, c.store.stats.reloads]).toEqual([0, 0]);
    expect(await feedRows(url)).toBe(2);
  });
});
