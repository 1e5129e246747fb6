import { afterEach, describe, expect, it } from 'vitest';
import { PgStore } from '../server/store/postgres/pg-store.js';
import { startPostgres } from './helpers/postgres.js';
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
});
