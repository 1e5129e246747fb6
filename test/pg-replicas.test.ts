import { afterEach, describe, expect, it } from 'vitest';
import { type PgStore, type RemoteChange, PgStore as Store } from '../server/store/postgres/pg-store.js';
import type { GroupRecord, ProvisioningKeyRecord } from '../server/store/records.js';
import type { StoreTransaction } from '../server/store/store.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { connectorRecord, groupRecord } from './helpers/store-contract.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function database(): Promise<string> {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  return db.url;
}

/** A replica: a store of its own on the shared database, with what it heard from the others. */
async function replica(url: string, options: { pollMs?: number; touchFlushMs?: number } = {}) {
  const heard: RemoteChange[] = [];
  const store = await Store.open(url, {
    pollMs: options.pollMs ?? 200,
    touchFlushMs: options.touchFlushMs,
    onRemoteChange: (changes) => heard.push(...changes),
  });
  cleanups.push(() => store.close());
  return { store, heard };
}

async function feedRows(url: string): Promise<number> {
  return withClient(url, async (c) =>
    Number((await c.query('SELECT count(*) FROM store_changes')).rows[0].count),
  );
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const keyRecord = (id: string, maxUses: number | null): ProvisioningKeyRecord => ({
  id,
  groupId: 'g',
  hash: 'h',
  encrypted: 'e',
  createdAt: 0,
  expiresAt: Number.MAX_SAFE_INTEGER,
  supersededAt: null,
  lastUsedAt: null,
  maxUses,
  uses: 0,
});

/** An enrollment as the service makes it: the key checked (current, not used up) and counted. */
function enroll(tx: StoreTransaction, keyId: string, connectorId: string): void {
  const key = tx.get('provisioningKeys', keyId);
  const group = tx.get('groups', 'g');
  if (!key || key.supersededAt !== null || group?.currentKeyId !== keyId) throw new Error('KEY_SUPERSEDED');
  if (key.maxUses != null && (key.uses ?? 0) >= key.maxUses) throw new Error('KEY_USED_UP');
  tx.put('connectors', { ...connectorRecord(connectorId), enrolledWithKeyId: keyId });
  tx.patch('provisioningKeys', keyId, { uses: (key.uses ?? 0) + 1 });
}

/** A regeneration: the group's key replaced, the old one superseded. */
function regenerate(tx: StoreTransaction, newKeyId: string): void {
  const group = tx.get('groups', 'g') as GroupRecord;
  tx.patch('provisioningKeys', group.currentKeyId, { supersededAt: 1 });
  tx.put('provisioningKeys', keyRecord(newKeyId, null));
  tx.patch('groups', 'g', { currentKeyId: newKeyId });
}

async function seedGroup(store: PgStore, maxUses: number | null): Promise<void> {
  await store.transact((tx) => {
    tx.put('groups', { ...groupRecord('g'), currentKeyId: 'k1' });
    tx.put('provisioningKeys', keyRecord('k1', maxUses));
  });
}

describe('PgStore replicas on one database', () => {
  it('a write through A appears in B, and B hears of it (the notification wakes B: no polling)', async () => {
    const url = await database();
    const a = await replica(url);
    const b = await replica(url, { pollMs: 600_000 });
    await a.store.transact((tx) => tx.put('groups', groupRecord('g')));
    await until(() => b.store.read((v) => v.get('groups', 'g')) !== undefined, 5000);
    expect(b.heard).toEqual([{ section: 'groups', id: 'g', before: undefined, after: groupRecord('g') }]);
    await a.store.transact((tx) => tx.patch('groups', 'g', { status: 'disabled' }));
    await until(() => b.heard.length === 2, 5000);
    expect(b.heard[1]).toMatchObject({ before: { status: 'enabled' }, after: { status: 'disabled' } });
    await a.store.transact((tx) => tx.delete('groups', 'g'));
    await until(() => b.heard.length === 3, 5000);
    expect(b.heard[2]).toMatchObject({ id: 'g', after: undefined });
    expect(b.store.read((v) => v.list('groups'))).toEqual([]);
    // A hears nothing of its own writes.
    expect(a.heard).toEqual([]);
  });

  it('caughtUp: B, deaf to notifications for a moment, has a record A just committed once it resolves', async () => {
    // What a handshake on B for a connector enrolled through A a few ms earlier waits for before it
    // may say CONNECTOR_NOT_FOUND (HandshakeChecks.requireUsableNow).
    const url = await database();
    const a = await replica(url);
    const b = await replica(url, { pollMs: 600_000 });
    const pid = b.store.feed.listenerPid;
    expect(pid).toBeGreaterThan(0);
    await withClient(url, (c) => c.query('SELECT pg_terminate_backend($1)', [pid]));
    await a.store.transact((tx) => tx.put('groups', groupRecord('fresh')));
    // B's listener comes back only after its reconnect delay, and its poll is ten minutes away.
    expect(b.store.read((v) => v.get('groups', 'fresh'))).toBeUndefined();
    await b.store.caughtUp();
    expect(b.store.read((v) => v.get('groups', 'fresh'))).toEqual(groupRecord('fresh'));
  });

  it('two uses of a one-use key on two replicas at once: the loser runs again over the winner and is refused', async () => {
    const url = await database();
    const a = await replica(url);
    const b = await replica(url);
    await seedGroup(a.store, 1);
    await until(() => b.store.read((v) => v.get('provisioningKeys', 'k1')) !== undefined);
    // Both apply at once over the same view (each replica counts its use), then commit concurrently.
    const results = await Promise.allSettled([
      a.store.transact((tx) => enroll(tx, 'k1', 'ca')),
      b.store.transact((tx) => enroll(tx, 'k1', 'cb')),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ message: 'KEY_USED_UP' });
    expect(a.store.stats.conflicts + b.store.stats.conflicts).toBeGreaterThan(0);
    const rows = await withClient(url, (c) =>
      c.query(`SELECT id, body FROM store_records WHERE section IN ('connectors', 'provisioningKeys')`),
    );
    expect(rows.rows.filter((r) => r.id.startsWith('c'))).toHaveLength(1);
    expect(rows.rows.find((r) => r.id === 'k1')?.body.uses).toBe(1);
    // Both replicas end with the one enrollment, and the loser's own attempt undone.
    for (const { store } of [a, b]) {
      await until(() =>
        store.read((v) => v.list('connectors').length === 1 && v.get('provisioningKeys', 'k1')?.uses === 1),
      );
    }
  });

  it('regenerate on A against enrollments on B: none commits with the old key after the regeneration', async () => {
    const url = await database();
    const a = await replica(url);
    const b = await replica(url);
    await seedGroup(a.store, null);
    await until(() => b.store.read((v) => v.get('groups', 'g')) !== undefined);
    const enrollments = Array.from({ length: 5 }, (_, i) =>
      b.store.transact((tx) => enroll(tx, 'k1', `c${i}`)),
    );
    const regenerated = a.store.transact((tx) => regenerate(tx, 'k2'));
    const settled = await Promise.allSettled([...enrollments, regenerated]);
    expect(settled.at(-1)?.status).toBe('fulfilled');
    // Every connector enrolled with k1 committed before the regeneration (a lower version), and the
    // key's count is exactly the enrollments that went through.
    const rows = await withClient(url, (c) =>
      c.query<{ id: string; version: string; body: { uses?: number } }>(
        `SELECT id, version::text, body FROM store_records`,
      ),
    );
    const version = (id: string) => Number(rows.rows.find((r) => r.id === id)?.version);
    const enrolled = rows.rows.filter((r) => /^c\d$/.test(r.id));
    for (const connector of enrolled) expect(version(connector.id)).toBeLessThan(version('k2'));
    expect(rows.rows.find((r) => r.id === 'k1')?.body.uses).toBe(enrolled.length);
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(enrolled.length + 1);
    for (const s of settled.filter((s) => s.status === 'rejected'))
      expect((s as PromiseRejectedResult).reason).toMatchObject({ message: 'KEY_SUPERSEDED' });
  });

  it('16 writers over 3 replicas: no change lost or applied twice, every replica ends with the same state', async () => {
    const url = await database();
    const replicas = [await replica(url), await replica(url), await replica(url)];
    const first = replicas[0]!.store;
    await first.transact((tx) => {
      for (let i = 0; i < 4; i++) tx.put('groups', { ...groupRecord(`n${i}`), description: '0' });
    });
    for (const { store } of replicas) await until(() => store.read((v) => v.list('groups').length) === 4);
    const perWriter = 20;
    await Promise.all(
      Array.from({ length: 16 }, async (_, writer) => {
        const { store } = replicas[writer % 3]!;
        for (let i = 0; i < perWriter; i++) {
          await store.transact((tx) => {
            // A counter: a lost or doubled update shows in its final value.
            const id = `n${(writer + i) % 4}`;
            const counter = tx.get('groups', id)!;
            tx.patch('groups', id, { description: String(Number(counter.description) + 1) });
            tx.put('connectors', connectorRecord(`w${writer}-${i}`));
          });
        }
      }),
    );
    const total = 16 * perWriter;
    const expected = Array.from({ length: 4 }, () => String(total / 4));
    const counters = (store: PgStore) =>
      store.read((v) => [0, 1, 2, 3].map((i) => v.get('groups', `n${i}`)?.description));
    const conflicts = replicas.reduce((sum, r) => sum + r.store.stats.conflicts, 0);
    expect(conflicts).toBeGreaterThan(0); // the replicas did collide
    for (const { store, heard } of replicas) {
      await until(
        () =>
          counters(store).join() === expected.join() &&
          store.read((v) => v.list('connectors').length) === total,
      );
      // Each connector another replica made was heard of exactly once.
      const made = heard.filter((c) => c.section === 'connectors').map((c) => c.id);
      expect(new Set(made).size).toBe(made.length);
      expect(made.length).toBe(total - store.stats.transactions + (store === first ? 1 : 0));
    }
    const rows = await withClient(url, (c) =>
      c.query(`SELECT id, body FROM store_records WHERE section = 'groups'`),
    );
    expect(rows.rows.map((r) => r.body.description)).toEqual(expected);
  });

  it('a renewed identity touched on A reaches B within the touch flush and a notification; last seen stays local', async () => {
    const url = await database();
    const a = await replica(url, { touchFlushMs: 200 });
    const b = await replica(url, { pollMs: 600_000 });
    await a.store.transact((tx) => tx.put('connectors', connectorRecord('c')));
    await until(() => b.store.read((v) => v.get('connectors', 'c')) !== undefined);
    const rowsBefore = await feedRows(url);
    // Last seen: written to the row, no version, no feed row (a fleet's connects must not flood the feed).
    a.store.touch('connectors', 'c', { lastSeenAt: 5 });
    await until(() => a.store.stats.commits === 2, 5000);
    expect(await feedRows(url)).toBe(rowsBefore);
    // Many touches of one identity in a flush: one feed op, carrying the last.
    const renewedAt = performance.now();
    for (let i = 1; i <= 10; i++)
      a.store.touch('connectors', 'c', { identity: { issuedAt: i, expiresAt: 100 + i, keyId: 'k2' } });
    await until(() => b.store.read((v) => v.get('connectors', 'c'))?.identity.keyId === 'k2', 5000);
    expect(performance.now() - renewedAt).toBeLessThan(1500);
    expect(b.store.read((v) => v.get('connectors', 'c'))?.identity).toEqual({
      issuedAt: 10,
      expiresAt: 110,
      keyId: 'k2',
    });
    expect(await feedRows(url)).toBe(rowsBefore + 1);
    // The row carries both the propagated and the local field; B heard of the record's change.
    const row = await withClient(url, (c) => c.query(`SELECT body FROM store_records WHERE id = 'c'`));
    expect(row.rows[0].body).toMatchObject({ lastSeenAt: 5, identity: { keyId: 'k2' } });
    expect(b.heard.at(-1)).toMatchObject({ id: 'c', after: { identity: { keyId: 'k2' } } });
  });

  it('host facts touched on A over a connector B changed that A has not read yet: A catches up first, both changes kept everywhere', async () => {
    const url = await database();
    const a = await replica(url, { touchFlushMs: 50 });
    const b = await replica(url);
    await a.store.transact((tx) => tx.put('connectors', connectorRecord('c')));
    await until(() => b.store.read((v) => v.get('connectors', 'c')) !== undefined);
    const host = { ...connectorRecord('c').host, hostname: 'renamed' };
    await withClient(url, async (blocker) => {
      // Every feed read waits on this lock (it reads the pruned horizon): A cannot hear of B's write.
      await blocker.query('BEGIN; LOCK TABLE store_feed_horizon IN ACCESS EXCLUSIVE MODE');
      await b.store.transact((tx) => tx.patch('connectors', 'c', { name: 'renamed-by-b' }));
      a.store.touch('connectors', 'c', { host });
      // A's touch names the version A holds: the commit finds B's newer one and catches up (blocked).
      await until(() => a.store.stats.conflicts > 0, 5000);
      await blocker.query('COMMIT');
    });
    for (const { store } of [a, b]) {
      await until(() => {
        const c = store.read((v) => v.get('connectors', 'c'));
        return c?.name === 'renamed-by-b' && c.host.hostname === 'renamed';
      }, 5000);
    }
    const row = await withClient(url, (c) => c.query(`SELECT body FROM store_records WHERE id = 'c'`));
    expect(row.rows[0].body).toMatchObject({ name: 'renamed-by-b', host: { hostname: 'renamed' } });
  });
});
