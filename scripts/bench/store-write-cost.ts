/**
 * What one durable store write costs as the store grows: the project's LowdbStore rewrites the whole
 * JSON document on every transaction batch (group commit), so each revoke, enrollment batch, group
 * delete or lazy flush pays this. Evidence for BENCHMARKS.md.
 *
 *   npx tsx scripts/bench/store-write-cost.ts [sizes=1000,10000,25000,50000]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomId } from '../../server/services/secrets.js';
import { LowdbStore, writeFileDurably } from '../../server/store/lowdb-store.js';
import type { ConnectorRecord, StoreData } from '../../server/store/records.js';
import { monoMs, summarize } from './lib/stats.js';

function connector(groupId: string, i: number): ConnectorRecord {
  const now = Date.now();
  return {
    id: randomId('con'),
    groupId,
    name: `bench-host-${i}`,
    status: 'enabled',
    enrolledAt: now + i,
    enrolledWithKeyId: 'pk_0123456789ab',
    keyThumbprint: 'x'.repeat(43),
    agentVersion: '0.1.0',
    host: {
      hostname: `bench-host-${i}`,
      os: 'Debian GNU/Linux',
      platform: 'linux',
      release: '6.1.0-bench',
      arch: 'x64',
      cpus: 2,
      memoryBytes: 2 * 1024 ** 3,
      ips: ['127.0.0.1', '10.0.0.12', 'fe80::1'],
      machineId: randomUUID(),
    },
    remoteAddress: '127.0.1.2',
    lastConnectedAt: now,
    lastSeenAt: now,
    identity: { issuedAt: now, expiresAt: now + 365 * 86_400_000, keyId: 'sk_0123456789abcdef' },
    revokedAt: null,
    revokeReason: null,
  };
}

const sizes = (process.argv[2] ?? '1000,10000,25000,50000').split(',').map(Number);
process.stdout.write(
  '| connectors | file MB | JSON.stringify ms | + write, fsync, rename ms | transact → durable, p50 / max ms |\n',
);
process.stdout.write('| ---: | ---: | ---: | ---: | ---: |\n');
for (const size of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'store-cost-'));
  try {
    const data: StoreData = {
      schemaVersion: 1,
      groups: {},
      provisioningKeys: {},
      connectors: {},
      apiKeys: {},
    };
    for (let i = 0; i < size; i++) {
      const record = connector('grp_0123456789abcdef', i);
      data.connectors[record.id] = record;
    }
    const file = join(dir, 'store.json');
    const stringify: number[] = [];
    const durable: number[] = [];
    for (let i = 0; i < 5; i++) {
      let t0 = monoMs();
      const text = JSON.stringify(data);
      stringify.push(monoMs() - t0);
      t0 = monoMs();
      await writeFileDurably(file, text);
      durable.push(monoMs() - t0);
    }
    const store = await LowdbStore.open(file);
    const ids = Object.keys(data.connectors);
    const transact: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = monoMs();
      await store.transact((d) => {
        const record = d.connectors[ids[i]!];
        if (record) record.status = 'disabled';
      });
      transact.push(monoMs() - t0);
    }
    await store.close();
    const mb = statSync(file).size / 2 ** 20;
    const s = summarize(stringify);
    const d = summarize(durable);
    const t = summarize(transact);
    process.stdout.write(
      `| ${size.toLocaleString('en-US')} | ${mb.toFixed(1)} | ${s.p50.toFixed(0)} | ${d.p50.toFixed(0)} | ${t.p50.toFixed(0)} / ${t.max.toFixed(0)} |\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
