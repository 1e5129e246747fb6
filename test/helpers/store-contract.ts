import { describe, expect, it } from 'vitest';
import { sampleConnectorRecord } from '../../scripts/lib/sample-records.js';
import type { ConnectorRecord, GroupRecord } from '../../server/store/records.js';
import type { Store } from '../../server/store/store.js';
import type { SyncLog } from './sync-log.js';

/**
 * A store under test, as its backend makes it. Every call may be asynchronous: the same suite must
 * serve a backend that talks to a database server.
 */
export interface StoreUnderTest {
  store: Store;
  /** Makes the next writes fail (a removed data dir, a lost connection) until `healWrites`. */
  breakWrites(): Promise<void>;
  healWrites(): Promise<void>;
  /**
   * A second store over the same durable state, the first one left as it is (not closed): what a
   * restart after a crash sees.
   */
  reopen(): Promise<Store>;
  /** The backend's fsync calls in order, where it makes them (null: it keeps nothing on disk). */
  syncs: SyncLog | null;
  /** Removes what the backend made (closing the stores is the test's). */
  cleanup(): Promise<void>;
}

export const groupRecord = (id: string, name = id): GroupRecord => ({
  id,
  name,
  description: 'x'.repeat(200),
  status: 'enabled',
  createdAt: 0,
  currentKeyId: '',
});

/** A stored connector (the one record the benchmark's commits write too). */
export const connectorRecord = sampleConnectorRecord;

/** The behaviour every Store backend must have: run it against each one. */
export function describeStoreContract(backend: string, open: () => Promise<StoreUnderTest>): void {
  describe(`Store contract: ${backend}`, () => {
    const names = async (store: Store) =>
      (await store.read((v) => v.list('groups').map((g) => g.name))).sort();

    it('puts, patches and deletes records, and a transaction reads its own writes', async () => {
      const t = await open();
      const seen = await t.store.transact((tx) => {
        tx.put('groups', groupRecord('a'));
        tx.put('groups', groupRecord('b'));
        const patched = tx.patch('groups', 'a', { name: 'a2' });
        const deleted = tx.delete('groups', 'b');
        return {
          patched: patched.name,
          inTx: tx.get('groups', 'a')?.name,
          deleted,
          gone: tx.get('groups', 'b'),
        };
      });
      expect(seen).toEqual({ patched: 'a2', inTx: 'a2', deleted: true, gone: undefined });
      expect(await t.store.read((v) => v.get('groups', 'a'))).toEqual(groupRecord('a', 'a2'));
      expect(await t.store.read((v) => v.list('groups').length)).toBe(1);
      expect(await t.store.transact((tx) => tx.delete('groups', 'nothing'))).toBe(false);
      await expect(t.store.transact((tx) => tx.patch('groups', 'nothing', { name: 'x' }))).rejects.toThrow(
        TypeError,
      );
      await t.store.close();
      await t.cleanup();
    });

    it('a transaction that throws changes nothing, the changes it made before the throw included', async () => {
      const t = await open();
      await t.store.transact((tx) => tx.put('groups', groupRecord('a')));
      const failing = t.store.transact((tx) => {
        tx.patch('groups', 'a', { name: 'changed' });
        tx.put('groups', groupRecord('new'));
        tx.delete('groups', 'a');
        throw new Error('refused');
      });
      await expect(failing).rejects.toThrow('refused');
      expect(await t.store.read((v) => v.list('groups'))).toEqual([groupRecord('a')]);
      // Nothing of it is written later either.
      await t.store.transact((tx) => tx.put('groups', groupRecord('after')));
      const again = await t.reopen();
      expect(await names(again)).toEqual(['a', 'after']);
      await again.close();
      await t.store.close();
      await t.cleanup();
    });

    it('a failed write returns every record to its durable value (puts, patches, deletes) and fails the queued ones', async () => {
      const t = await open();
      await t.store.transact((tx) => {
        tx.put('groups', groupRecord('patched'));
        tx.put('groups', groupRecord('deleted'));
      });
      await t.breakWrites();
      const first = t.store.transact((tx) => {
        tx.patch('groups', 'patched', { name: 'lost' });
        tx.delete('groups', 'deleted');
        tx.put('groups', groupRecord('added'));
      });
      const queued = t.store.transact((tx) => tx.patch('groups', 'patched', { status: 'disabled' }));
      await expect(first).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
      await expect(queued).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
      expect(await t.store.read((v) => v.get('groups', 'patched'))).toEqual(groupRecord('patched'));
      expect(await names(t.store)).toEqual(['deleted', 'patched']);
      await t.healWrites();
      await t.store.transact((tx) => tx.put('groups', groupRecord('later')));
      const again = await t.reopen();
      expect(await again.read((v) => v.list('groups'))).toEqual(await t.store.read((v) => v.list('groups')));
      await again.close();
      await t.store.close();
      await t.cleanup();
    });

    it('records are frozen: a write to a stored record, nested or not, throws and changes nothing', async () => {
      const t = await open();
      const input = connectorRecord('c');
      await t.store.transact((tx) => tx.put('connectors', input));
      const stored = (await t.store.read((v) => v.get('connectors', 'c'))) as ConnectorRecord;
      expect(() => {
        stored.name = 'x';
      }).toThrow(TypeError);
      expect(() => stored.host.ips.push('10.0.0.2')).toThrow(TypeError);
      expect(() => {
        stored.identity.expiresAt = 2;
      }).toThrow(TypeError);
      // What was put is the stored record's value: changing it afterwards cannot reach the store either.
      expect(() => {
        input.host.hostname = 'y';
      }).toThrow(TypeError);
      const patched = await t.store.transact((tx) =>
        tx.patch('connectors', 'c', { host: { ...stored.host } }),
      );
      expect(() => {
        (patched as ConnectorRecord).host.cpus = 3;
      }).toThrow(TypeError);
      t.store.touch('connectors', 'c', { identity: { issuedAt: 1, expiresAt: 2, keyId: 'k2' } });
      const touched = (await t.store.read((v) => v.get('connectors', 'c'))) as ConnectorRecord;
      expect(() => {
        touched.identity.keyId = 'k3';
      }).toThrow(TypeError);
      expect(touched).toEqual({
        ...connectorRecord('c'),
        identity: { issuedAt: 1, expiresAt: 2, keyId: 'k2' },
      });
      await t.store.close();
      await t.cleanup();
    });

    it('a touch applies at once, is never rolled back, and is written with the next write', async () => {
      const t = await open();
      await t.store.transact((tx) => tx.put('connectors', connectorRecord('c')));
      expect(t.store.touch('connectors', 'c', { lastSeenAt: 5 })).toBe(true);
      expect(t.store.touch('connectors', 'missing', { lastSeenAt: 5 })).toBe(false);
      expect(await t.store.read((v) => v.get('connectors', 'c')?.lastSeenAt)).toBe(5);
      await t.breakWrites();
      await expect(t.store.transact((tx) => tx.put('groups', groupRecord('lost')))).rejects.toMatchObject({
        reason: 'STORE_UNAVAILABLE',
      });
      expect(await t.store.read((v) => v.get('connectors', 'c')?.lastSeenAt)).toBe(5);
      await t.healWrites();
      await t.store.transact((tx) => tx.put('groups', groupRecord('other')));
      const again = await t.reopen();
      expect(await again.read((v) => v.get('connectors', 'c')?.lastSeenAt)).toBe(5);
      await again.close();
      await t.store.close();
      await t.cleanup();
    });

    it('a snapshot keeps the records of its instant while they are patched, deleted, added and touched', async () => {
      const t = await open();
      await t.store.transact((tx) => {
        for (const id of ['a', 'b', 'c']) tx.put('groups', groupRecord(id));
      });
      // A change not yet written when the snapshot is taken, changed again after it.
      const first = t.store.transact((tx) => tx.patch('groups', 'a', { name: 'a1' }));
      const snapshot = await t.store.snapshot();
      const second = t.store.transact((tx) => {
        tx.patch('groups', 'a', { name: 'a2' });
        tx.delete('groups', 'b');
        tx.put('groups', groupRecord('d'));
      });
      t.store.touch('groups', 'c', { status: 'disabled' });
      await Promise.all([first, second]);
      const groups = snapshot.sections.find(([section]) => section === 'groups')![1] as GroupRecord[];
      expect(groups.map((g) => `${g.id}:${g.name}:${g.status}`).sort()).toEqual([
        'a:a1:enabled',
        'b:b:enabled',
        'c:c:enabled',
      ]);
      snapshot.release();
      await t.store.close();
      await t.cleanup();
    });

    it('close writes what is pending (touches included); a store reopened sees everything committed', async () => {
      const t = await open();
      await t.store.transact((tx) => {
        tx.put('groups', groupRecord('a'));
        tx.put('connectors', connectorRecord('c'));
      });
      await t.store.transact((tx) => tx.patch('groups', 'a', { name: 'renamed' }));
      t.store.touch('connectors', 'c', { lastSeenAt: 9 });
      await t.store.close();
      await expect(t.store.transact(() => {})).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
      const again = await t.reopen();
      expect(await again.read((v) => v.get('groups', 'a'))).toEqual(groupRecord('a', 'renamed'));
      expect(await again.read((v) => v.get('connectors', 'c')?.lastSeenAt)).toBe(9);
      await again.close();
      await t.cleanup();
    });

    it('a commit resolves only after its data is synced', async (ctx) => {
      const t = await open();
      if (!t.syncs) {
        await t.cleanup();
        ctx.skip(); // keeps nothing on disk
        return;
      }
      const syncs = t.syncs;
      for (const change of [
        (tx: Parameters<Parameters<Store['transact']>[0]>[0]) => tx.put('groups', groupRecord('a')),
        (tx: Parameters<Parameters<Store['transact']>[0]>[0]) => tx.patch('groups', 'a', { name: 'b' }),
      ]) {
        const from = syncs.entries.length;
        await t.store.transact(change).then(() => syncs.note('resolved'));
        const seen = syncs.since(from);
        expect(seen.at(-1), seen.join(', ')).toBe('resolved');
        expect(seen.filter((e) => e.startsWith('synced ')).length, seen.join(', ')).toBeGreaterThan(0);
      }
      // Group commit: each of many concurrent commits still resolves only after a sync began after it.
      const from = syncs.entries.length;
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => {
          syncs.note(`transact ${i}`);
          return t.store
            .transact((tx) => tx.put('groups', groupRecord(`g${i}`)))
            .then(() => syncs.note(`resolved ${i}`));
        }),
      );
      const seen = syncs.since(from);
      for (let i = 0; i < 50; i++) {
        const between = seen.slice(seen.indexOf(`transact ${i}`), seen.indexOf(`resolved ${i}`));
        expect(
          between.some((e) => e.startsWith('synced ')),
          `commit ${i}: ${seen.join(', ')}`,
        ).toBe(true);
      }
      await t.store.close();
      await t.cleanup();
    });
  });
}
