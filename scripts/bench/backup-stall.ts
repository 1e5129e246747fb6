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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer } from '../../server/app.js';
import { BACKUP_PATH } from '../../server/backup/http-endpoint.js';
import { takeSnapshot } from '../../server/backup/snapshot.js';
import { systemClock } from '../../server/clock.js';
import { defaultConfig } from '../../server/server-config.js';
import { JournalStore } from '../../server/store/journal-store.js';
import { writeFileDurably } from '../../shared/private-files.js';
import { seededStoreData } from './lib/seed-store.js';
import { monoMs } from './lib/stats.js';

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
    const data = seededStoreData(size);
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
      const copy = await JournalStore.open(join(dir, 'copy.json'));
      await copy.transact((tx) => {
        for (const record of Object.values(data.connectors)) tx.put('connectors', record);
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
