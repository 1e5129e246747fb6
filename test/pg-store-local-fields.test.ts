import { afterEach, describe, expect, it } from 'vitest';
import { PgStore } from '../server/store/postgres/pg-store.js';
import type { ConnectorRecord } from '../server/store/records.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { connectorRecord } from './helpers/store-contract.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function replica(url: string): Promise<PgStore> {
  const store = await PgStore.open(url, { pollMs: 100, touchFlushMs: 10 });
  cleanups.push(() => store.close());
  return store;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out: ${what}`);
}

const connection = (c: ConnectorRecord | undefined) =>
  c && {
    status: c.status,
    lastConnectedAt: c.lastConnectedAt,
    lastSeenAt: c.lastSeenAt,
    remoteAddress: c.remoteAddress,
  };

const stored = (url: string) =>
  withClient(url, async (c) => {
    const { rows } = await c.query<{ body: ConnectorRecord }>(
      `SELECT body FROM store_records WHERE section = 'connectors' AND id = 'con_1'`,
    );
    return connection(rows[0]?.body);
  });

describe('local fields (last connect, last seen) across replicas', () => {
  it('a revoke through a replica that missed the session holder’s touches keeps the newer connection fields: stored, and on both replicas', async () => {
    await using db = await freshDatabase();
    const a = await replica(db.url);
    const b = await replica(db.url);
    await a.transact((tx) => tx.put('connectors', connectorRecord('con_1')));
    await until('B has it', () => b.read((v) => v.get('connectors', 'con_1')) !== undefined);

    // The connector's first connect reaches every replica (any replica's pending sweep deletes
    // connectors that never connected).
    b.touch('connectors', 'con_1', { lastConnectedAt: 1000, lastSeenAt: 1000, remoteAddress: '192.0.2.1' });
    await until(
      'A has the first connect',
      () => a.read((v) => v.get('connectors', 'con_1'))?.lastConnectedAt === 1000,
    );

    // B holds the next session: its connect and last-seen are local touches (no version, no feed op).
    b.touch('connectors', 'con_1', { lastConnectedAt: 5000, lastSeenAt: 5100, remoteAddress: '192.0.2.7' });
    await until('the touch is stored', async () => (await stored(db.url))?.lastConnectedAt === 5000);
    expect(connection(a.read((v) => v.get('connectors', 'con_1')))).toMatchObject({ lastConnectedAt: 1000 });

    // A, whose copy has none of that, writes the record whole.
    await a.transact((tx) => tx.patch('connectors', 'con_1', { status: 'revoked', revokedAt: 6000 }));
    const expected = {
      status: 'revoked',
      lastConnectedAt: 5000,
      lastSeenAt: 5100,
      remoteAddress: '192.0.2.7',
    };
    expect(await stored(db.url)).toEqual(expected);
    expect(connection(a.read((v) => v.get('connectors', 'con_1')))).toEqual(expected);
    await until('B has the revoke', () => b.read((v) => v.get('connectors', 'con_1')?.status) === 'revoked');
    expect(connection(b.read((v) => v.get('connectors', 'con_1')))).toEqual(expected);

    // Newer in the write wins: A's own connect after B's is kept as A wrote it.
    a.touch('connectors', 'con_1', {
      lastConnectedAt: 7000,
      lastSeenAt: 7000,
      remoteAddress: '198.51.100.9',
    });
    await a.transact((tx) => tx.patch('connectors', 'con_1', { status: 'enabled', revokedAt: null }));
    await until('B has the change', () => b.read((v) => v.get('connectors', 'con_1')?.status) === 'enabled');
    const newer = {
      status: 'enabled',
      lastConnectedAt: 7000,
      lastSeenAt: 7000,
      remoteAddress: '198.51.100.9',
    };
    expect(await stored(db.url)).toEqual(newer);
    expect(connection(b.read((v) => v.get('connectors', 'con_1')))).toEqual(newer);
  });
});
