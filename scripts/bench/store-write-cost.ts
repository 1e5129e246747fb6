/**
 * What one durable store write costs as the store grows: rewriting the whole JSON document (what the
 * store does when it folds its journal in, and did on every commit before it had one), and one
 * transaction through the JournalStore (a journal append). Evidence for BENCHMARKS.md.
 *
 *   npx tsx scripts/bench/store-write-cost.ts [sizes=1000,10000,25000,50000]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JournalStore } from '../../server/store/journal-store.js';
import { writeFileDurably } from '../../shared/private-files.js';
import { seededStoreData } from './lib/seed-store.js';
import { monoMs, summarize } from './lib/stats.js';

const sizes = (process.argv[2] ?? '1000,10000,25000,50000').split(',').map(Number);
process.stdout.write(
  '| connectors | file MB | JSON.stringify ms | + write, fsync, rename ms | transact → durable, p50 / max ms |\n',
);
process.stdout.write('| ---: | ---: | ---: | ---: | ---: |\n');
for (const size of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'store-cost-'));
  try {
    const data = seededStoreData(size);
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
    const store = await JournalStore.open(file);
    const ids = Object.keys(data.connectors);
    const transact: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = monoMs();
      await store.transact((tx) => tx.patch('connectors', ids[i]!, { status: 'disabled' }));
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
