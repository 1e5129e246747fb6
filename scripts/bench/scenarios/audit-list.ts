import { closeSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_AUDIT_MAX_BYTES } from '../../../server/services/audit.js';
import { rotatedAuditFile } from '../../../server/store/audit-files.js';
import { emptyData } from '../../../server/store/records.js';
import { makeTempDir, removeTempDir } from '../../lib/processes.js';
import type { Harness, ServerHandle } from '../harness.js';
import { monoMs, summarize } from '../lib/stats.js';
import type { AuditListResult } from '../results.js';

const PAGE = 100;
/** One event a second, ending now: 1,000,000 of them span ~11.6 days. */
const EVENT_SPACING_MS = 1000;

/**
 * One line of the audit log, in the shapes the server writes most (agent connects, enrollments,
 * admin changes, refusal summaries), built as text: JSON.stringify of a million events took most of
 * a minute on this machine under load.
 */
export function auditLineOf(i: number, atMs: number): string {
  const at = new Date(atMs).toISOString();
  const id = `evt_${i.toString(36).padStart(16, '0')}`;
  const connectorId = `con_${(i % 50_000).toString(36).padStart(16, 'c')}`;
  const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  const head = `{"id":"${id}","at":"${at}"`;
  const where = `"remoteAddress":"${address}","groupId":"grp_benchaudit00000"`;
  switch (i % 4) {
    case 0:
      return `${head},"type":"session.connected","actor":{"kind":"agent","connectorId":"${connectorId}"},"outcome":"success","reason":null,"security":false,${where},"connectorId":"${connectorId}","keyId":null,"details":{}}\n`;
    case 1:
      return `${head},"type":"enrollment.succeeded","actor":{"kind":"agent","connectorId":null},"outcome":"success","reason":null,"security":false,${where},"connectorId":"${connectorId}","keyId":"key_benchaudit00000","details":{}}\n`;
    case 2:
      return `${head},"type":"connector.disabled","actor":{"kind":"admin","apiKeyId":"ak_benchaudit000000"},"outcome":"success","reason":null,"security":false,${where},"connectorId":"${connectorId}","keyId":null,"details":{"path":"connectors.disable"}}\n`;
    default:
      return `${head},"type":"enrollment.refused","actor":{"kind":"agent","connectorId":null},"outcome":"refused","reason":"KEY_INVALID","security":false,${where},"connectorId":null,"keyId":null,"details":{"suppressed":41,"windowStart":"${at}","windowEnd":"${at}"}}\n`;
  }
}

/**
 * Writes `count` events in the audit format straight into `dataDir`, split as the server rotates
 * them (`audit.jsonl.<n>` pieces of `DEFAULT_AUDIT_MAX_BYTES`, the newest in `audit.jsonl`).
 */
export function writeAuditFiles(
  dataDir: string,
  count: number,
  endMs: number,
): { files: number; bytes: number } {
  const file = join(dataDir, 'audit.jsonl');
  const pieces: string[] = [];
  let fd = -1;
  let pieceBytes = 0;
  let bytes = 0;
  let batch: string[] = [];
  const flush = () => {
    if (batch.length === 0) return;
    const buffer = Buffer.from(batch.join(''));
    writeSync(fd, buffer);
    pieceBytes += buffer.length;
    bytes += buffer.length;
    batch = [];
  };
  for (let i = 0; i < count; i++) {
    if (fd === -1) {
      const name = `${file}.piece-${pieces.length}`;
      pieces.push(name);
      fd = openSync(name, 'w', 0o600);
      pieceBytes = 0;
    }
    batch.push(auditLineOf(i, endMs - (count - i) * EVENT_SPACING_MS));
    if (batch.length === 2000) flush();
    if (pieceBytes >= DEFAULT_AUDIT_MAX_BYTES) {
      closeSync(fd);
      fd = -1;
    }
  }
  flush();
  if (fd !== -1) closeSync(fd);
  // Oldest piece gets the highest number; the newest is the current file.
  pieces.forEach((name, k) => {
    renameSync(name, k === pieces.length - 1 ? file : rotatedAuditFile(file, pieces.length - 1 - k));
  });
  return { files: pieces.length, bytes };
}

/**
 * `audit.list`'s first page (limit 100) and a `since` page (the last 100 events' time) on project
 * servers whose audit logs hold `counts` events each, written straight to their data dirs before
 * they start. The servers run side by side and the calls alternate between them, so a busy moment
 * on this shared machine lands on every size alike. The target: the first page with 1,000,000
 * events within 2× of it with 1,000.
 */
export async function runAuditList(h: Harness, counts: number[]): Promise<AuditListResult[]> {
  const dirs: string[] = [];
  const servers: ServerHandle[] = [];
  try {
    const written = counts.map((count) => {
      const dir = makeTempDir('bench-audit-');
      dirs.push(dir);
      const t0 = monoMs();
      const out = writeAuditFiles(dir, count, Date.now() - 60_000);
      // An empty store beside them: a data dir with an audit log and no store is one that lost it,
      // and the server refuses to start on it.
      writeFileSync(join(dir, 'store.json'), JSON.stringify(emptyData()), { mode: 0o600 });
      h.progress(
        `audit list: ${count} events written in ${out.files} file(s), ${(out.bytes / 2 ** 20).toFixed(1)} MiB, ` +
          `in ${((monoMs() - t0) / 1000).toFixed(1)} s`,
      );
      return out;
    });
    for (const [i, count] of counts.entries())
      servers.push(await h.startServer('project', { dataDir: dirs[i]!, name: `project-audit-${count}` }));
    const admins = servers.map((server) => server.requireAdmin());
    const sinces: string[] = [];
    for (const admin of admins) sinces.push((await admin.audit.list.query({ limit: PAGE })).at(-1)!.at);
    for (let i = 0; i < 10; i++)
      for (const [k, admin] of admins.entries()) {
        await admin.audit.list.query({ limit: PAGE });
        await admin.audit.list.query({ limit: 10_000, since: sinces[k]! });
      }
    await Promise.all(servers.map((server) => server.resetEld()));
    const firstPage = counts.map((): number[] => []);
    const sincePage = counts.map((): number[] => []);
    const sinceCount = counts.map(() => 0);
    for (let i = 0; i < h.plan.readRepeats; i++)
      for (const [k, admin] of admins.entries()) {
        let t = monoMs();
        const page = await admin.audit.list.query({ limit: PAGE });
        firstPage[k]!.push(monoMs() - t);
        if (page.length !== PAGE) throw new Error(`audit list: a first page of ${page.length}, not ${PAGE}`);
        t = monoMs();
        sinceCount[k] = (await admin.audit.list.query({ limit: 10_000, since: sinces[k]! })).length;
        sincePage[k]!.push(monoMs() - t);
      }
    const results: AuditListResult[] = [];
    for (const [k, count] of counts.entries()) {
      const result: AuditListResult = {
        events: count,
        files: written[k]!.files,
        bytes: written[k]!.bytes,
        firstPageMs: summarize(firstPage[k]!),
        sinceMs: summarize(sincePage[k]!),
        sinceCount: sinceCount[k]!,
        eldMaxMs: (await servers[k]!.stats()).eld.maxMs,
      };
      h.progress(
        `audit list with ${count} events: first page p50 ${result.firstPageMs.p50.toFixed(2)} ms, ` +
          `since (${result.sinceCount} events) p50 ${result.sinceMs.p50.toFixed(2)} ms`,
      );
      results.push(result);
    }
    return results;
  } finally {
    for (const server of servers) await server.stop();
    for (const dir of dirs) removeTempDir(dir);
  }
}
