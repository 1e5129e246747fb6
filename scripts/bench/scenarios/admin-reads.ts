import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomId } from '../../../server/services/secrets.js';
import type { ConnectorRecord, StoreData } from '../../../server/store/records.js';
import { makeTempDir, removeTempDir } from '../../lib/processes.js';
import type { Harness, ServerHandle } from '../harness.js';
import { monoMs, summarize } from '../lib/stats.js';
import type { ReadsResult } from '../results.js';

/**
 * Scenario 7 on a running project server: `connectors.list` (first page) and `connectors.counts`,
 * one call at a time, beside a bare HTTP server answering the same page's bytes (the floor).
 */
export async function measureReads(
  h: Harness,
  server: ServerHandle,
  stored: number,
  synthetic: boolean,
): Promise<ReadsResult> {
  const admin = server.requireAdmin();
  const repeats = h.plan.readRepeats;
  for (let i = 0; i < 2; i++) {
    await admin.connectors.list.query({});
    await admin.connectors.counts.query({});
  }
  await server.resetEld();
  const list: number[] = [];
  const counts: number[] = [];
  let page: unknown = null;
  for (let i = 0; i < repeats; i++) {
    let t0 = monoMs();
    page = await admin.connectors.list.query({});
    list.push(monoMs() - t0);
    t0 = monoMs();
    await admin.connectors.counts.query({});
    counts.push(monoMs() - t0);
  }
  const eldMaxMs = (await server.stats()).eld.maxMs;

  const body = JSON.stringify({ result: { data: page } });
  const bare = await h.startServer('bare', { name: 'bare-http' });
  const baseline: number[] = [];
  try {
    await bare.child.peer.call('setPayload', { body });
    for (let i = 0; i < 2; i++) await fetch(`${bare.url}/payload`).then((r) => r.json());
    for (let i = 0; i < repeats * 2; i++) {
      const t0 = monoMs();
      await fetch(`${bare.url}/payload`).then((r) => r.json());
      baseline.push(monoMs() - t0);
    }
  } finally {
    await bare.stop();
  }
  const result: ReadsResult = {
    stored,
    synthetic,
    listMs: summarize(list),
    countsMs: summarize(counts),
    baselineMs: summarize(baseline),
    pageBytes: Buffer.byteLength(body),
    eldMaxMs,
  };
  h.progress(
    `admin reads with ${stored} stored${synthetic ? ' (synthetic)' : ''}: list p50 ${result.listMs.p50.toFixed(1)} ms, ` +
      `counts p50 ${result.countsMs.p50.toFixed(1)} ms, bare HTTP same page p50 ${result.baselineMs.p50.toFixed(1)} ms`,
  );
  return result;
}

/**
 * Scenario 7 at sizes beyond what was enrolled: a copy of a real data dir whose connectors are
 * cloned (fresh ids, same shape) up to `stored`, served by a fresh project server.
 */
export async function runSyntheticReads(
  h: Harness,
  sourceDataDir: string,
  stored: number,
): Promise<ReadsResult> {
  const dir = makeTempDir('bench-reads-');
  try {
    for (const file of ['signing-keys.json', 'secret.key', 'admin.key'])
      await copyFile(join(sourceDataDir, file), join(dir, file));
    const data = JSON.parse(await readFile(join(sourceDataDir, 'store.json'), 'utf8')) as StoreData;
    const templates = Object.values(data.connectors);
    if (templates.length === 0) throw new Error('no connectors to clone');
    const ids = Object.keys(data.connectors);
    for (let i = ids.length; i < stored; i++) {
      const template = templates[i % templates.length]!;
      const id = randomId('con');
      const clone: ConnectorRecord = {
        ...template,
        id,
        name: `${template.name}-${i}`,
        host: { ...template.host },
        enrolledAt: template.enrolledAt + i,
      };
      data.connectors[id] = clone;
    }
    // Keep exactly `stored` (the source may hold more).
    const all = Object.keys(data.connectors);
    for (const id of all.slice(stored)) delete data.connectors[id];
    await writeFile(join(dir, 'store.json'), JSON.stringify(data), { mode: 0o600 });
    const server = await h.startServer('project', { dataDir: dir, name: `project-reads-${stored}` });
    try {
      return await measureReads(h, server, stored, true);
    } finally {
      await server.stop();
    }
  } finally {
    removeTempDir(dir);
  }
}
