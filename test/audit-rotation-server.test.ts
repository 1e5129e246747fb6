import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { ManualClock } from '../server/clock.js';
import { parseServeConfig } from '../server/config.js';
import { type AuditEvent, FileAuditLog } from '../server/services/audit.js';
import { serverCli } from './helpers/cli.js';
import { spawnServer } from './helpers/processes.js';
import { tempDir } from './helpers/server.js';

/** The admin CLI as the README runs it; its exit code, stdout and stderr. */
const cli = (args: string[]) => serverCli(args);

async function auditFiles(dataDir: string): Promise<string[]> {
  return (await readdir(dataDir)).filter((name) => name.startsWith('audit.jsonl')).sort();
}

describe('audit rotation in a running server', () => {
  it('serve --audit-max-bytes 4KiB --audit-keep 2: rotates, keeps 2, appends to audit.jsonl after a kill -9 and restart; `audit --since` and `--before` page through it', async () => {
    const dataDir = await tempDir('ce-audit-serve-');
    const flags = ['--audit-max-bytes', '4KiB', '--audit-keep', '2'];
    let server = await spawnServer(dataDir, flags);
    try {
      const admin = createAdminClient({ url: server.url, adminKey: server.adminKey });
      for (let i = 0; i < 40; i++) await admin.groups.create.mutate({ name: `Rotated ${i}` });
      expect(await auditFiles(dataDir)).toEqual(['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2']);
      const before = await admin.audit.list.query({ limit: 10_000 });
      expect(before[0]).toMatchObject({ type: 'group.created', details: expect.anything() });
      server.kill('SIGKILL');
      await server.exited;

      server = await spawnServer(dataDir, flags, server.port);
      const again = createAdminClient({ url: server.url, adminKey: server.adminKey });
      const created = await again.groups.create.mutate({ name: 'After the restart' });
      const current = (await readFile(join(dataDir, 'audit.jsonl'), 'utf8')).trim().split('\n');
      expect(JSON.parse(current.at(-1)!) as AuditEvent).toMatchObject({
        type: 'group.created',
        groupId: created.id,
      });
      const after = await again.audit.list.query({ limit: 10_000 });
      expect(after[0]).toMatchObject({ groupId: created.id });
      // Nothing lost or repeated across the restart (rotation may have dropped only the oldest).
      const ids = after.map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.slice(1)).toEqual(before.map((e) => e.id).slice(0, ids.length - 1));

      const common = ['--server', server.url, '--data-dir', dataDir, '--json'];
      const since = after[4]!.at;
      const recent = await cli(['audit', '--since', since, ...common]);
      expect(recent.code, recent.stderr).toBe(0);
      expect((JSON.parse(recent.stdout) as AuditEvent[]).map((e) => e.id)).toEqual(
        after.filter((e) => e.at >= since).map((e) => e.id),
      );
      // The table ends with the command for the next page; that page follows the first one.
      const table = await cli(['audit', '--limit', '3', '--server', server.url, '--data-dir', dataDir]);
      // With the same filters and the same server, so that running it as printed continues this
      // listing (it named neither the server nor the data dir, and asked the default one).
      const older = /^Older: (audit .*)$/m.exec(table.stdout)?.[1];
      expect(older).toBe(`audit --before ${ids[2]} --limit 3 --server ${server.url} --data-dir ${dataDir}`);
      const asPrinted = await cli([...older!.split(' '), '--json']);
      expect((JSON.parse(asPrinted.stdout) as AuditEvent[]).map((e) => e.id)).toEqual(ids.slice(3, 6));
      const filtered = await cli([
        'audit',
        '--limit',
        '1',
        '--type',
        'group',
        '--server',
        server.url,
        '--data-dir',
        dataDir,
      ]);
      expect(filtered.stdout).toMatch(/Older: audit --before evt_\w+ --type group --limit 1 --server /);
      const next = await cli(['audit', '--limit', '3', '--before', ids[2]!, ...common]);
      expect((JSON.parse(next.stdout) as AuditEvent[]).map((e) => e.id)).toEqual(ids.slice(3, 6));
    } finally {
      server.kill('SIGTERM');
      await server.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('a clock stepped back across a restart does not put an event before the ones already logged (list with `since` relies on it)', async () => {
    const dir = await tempDir('ce-audit-clock-');
    const file = join(dir, 'audit.jsonl');
    const clock = new ManualClock(Date.parse('2026-05-01T12:00:00Z'));
    try {
      const log = await FileAuditLog.open(file, clock);
      const last = await log.record({ type: 'group.created', actor: { kind: 'system' } });
      await log.close();
      clock.advance(-3_600_000);
      const again = await FileAuditLog.open(file, clock);
      const next = await again.record({ type: 'group.updated', actor: { kind: 'system' } });
      expect(next.at).toBe(last.at);
      expect((await again.list({ since: last.at })).map((e) => e.id)).toEqual([next.id, last.id]);
      clock.advance(3_600_001);
      expect((await again.record({ type: 'group.deleted', actor: { kind: 'system' } })).at).toBe(
        '2026-05-01T12:00:00.001Z',
      );
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the flags and their environment variables are validated once, with the fix in the message', () => {
    expect(parseServeConfig({}, {})).toMatchObject({ auditMaxBytes: 64 * 1024 ** 2, auditKeep: 10 });
    const env = { CONNECTOR_AUDIT_MAX_BYTES: '1MiB', CONNECTOR_AUDIT_KEEP: '3' };
    expect(parseServeConfig({}, env)).toMatchObject({ auditMaxBytes: 1024 ** 2, auditKeep: 3 });
    expect(parseServeConfig({ auditMaxBytes: '20000' }, env).auditMaxBytes).toBe(20_000);
    expect(() => parseServeConfig({ auditMaxBytes: 'lots' }, {})).toThrow(
      /--audit-max-bytes: .*e\.g\. 64MiB/,
    );
    expect(() => parseServeConfig({ auditMaxBytes: '100' }, {})).toThrow(
      /--audit-max-bytes: must be at least 4KiB/,
    );
    expect(() => parseServeConfig({ auditKeep: '0' }, {})).toThrow(/--audit-keep/);
  });
});
