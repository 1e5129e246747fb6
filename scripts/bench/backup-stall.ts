/**
 * How long an online backup stalls the server's event loop at a given store size (issue 12: under
 * 100 ms at 25k connectors). Seeds a data dir with N connector records of realistic size, starts
 * the real server in this process, and downloads `GET /admin/backup` from it while a 1 ms timer
 * measures the longest gap between turns of the loop (the download's own reading runs on the same
 * loop, so the figure is an upper bound). For comparison it times what the backup avoids: one
 * JSON.stringify of the whole state. Those two are CPU times (a shared machine inflates wall times);
 * the loop gap is wall time.
 *
 *   node --import tsx scripts/bench/backup-stall.ts [sizes=25000]
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer } from '../../server/app.js';
import { BACKUP_PATH } from '../../server/backup/http-endpoint.js';
import { takeSnapshot } from '../../server/backup/snapshot.js';
import { systemClock } from '../../server/clock.js';
import { defaultConfig } from '../../server/server-config.js';
import { randomId } from '../../server/services/secrets.js';
import { LowdbStore, writeFileDurably } from '../../server/store/lowdb-store.js';
import type { ConnectorRecord, StoreData } from '../../server/store/records.js';
import { monoMs } from './lib/stats.js';

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

/** CPU time this process has used (user + system), ms: unlike wall time, not inflated by a busy machine. */
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};

/** The longest gap between ticks of a 1 ms timer while `work` runs. */
async function maxLoopGap<T>(work: () => Promise<T>): Promise<{ result: T; maxGapMs: number }> {
  let last = monoMs();
  let maxGapMs = 0;
  const timer = setInterval(() => {
    const now = monoMs();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
  }, 1);
  try {
    const result = await work();
    return { result, maxGapMs };
  } finally {
    clearInterval(timer);
  }
}

const sizes = (process.argv[2] ?? '25000').split(',').map(Number);
process.stdout.write(
  '| connectors | backup MB | download s | max loop gap during backup ms | snapshot (one turn), CPU ms | one JSON.stringify of the state, CPU ms |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n',
);
for (const size of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'backup-stall-'));
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
    await writeFileDurably(join(dir, 'store.json'), JSON.stringify(data));
    const server = await startServer(defaultConfig({ dataDir: dir, port: 0 }), {
      logger: pino({ level: 'silent' }),
    });
    try {
      const adminKey = (await import('node:fs')).readFileSync(server.adminKeyFile, 'utf8').trim();
      const t0 = monoMs();
      const { result: bytes, maxGapMs } = await maxLoopGap(async () => {
        const res = await fetch(`${server.url}${BACKUP_PATH}`, {
          headers: { authorization: `Bearer ${adminKey}` },
        });
        let n = 0;
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) n += chunk.length;
        return n;
      });
      const seconds = (monoMs() - t0) / 1000;
      const snapshotMs: number[] = [];
      const stringifyMs: number[] = [];
      const copy = await LowdbStore.open(join(dir, 'copy.json'));
      await copy.transact((d) => {
        for (const record of Object.values(data.connectors)) d.connectors[record.id] = record;
      });
      for (let i = 0; i < 5; i++) {
        let s = cpuMs();
        takeSnapshot(
          { store: copy, clock: systemClock, secret: Buffer.alloc(32), signingKeys: () => ({ keys: [] }) },
          null,
        ).records.release();
        snapshotMs.push(cpuMs() - s);
        s = cpuMs();
        JSON.stringify(data);
        stringifyMs.push(cpuMs() - s);
      }
      await copy.close();
      const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      process.stdout.write(
        `| ${size.toLocaleString('en-US')} | ${(bytes / 2 ** 20).toFixed(1)} | ${seconds.toFixed(2)} | ${maxGapMs.toFixed(0)} | ${median(snapshotMs).toFixed(1)} | ${median(stringifyMs).toFixed(0)} |\n`,
      );
    } finally {
      await server.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
