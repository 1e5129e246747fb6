import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { DataDirLockedError } from '../server/store/data-dir-lock.js';
import { freePort, spawnServer, spawnTs } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** Every entry of a dir with its mode and bytes: what "nothing written" is checked against. */
async function dirBytes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) {
    const info = await stat(join(dir, name));
    out[name] =
      `${(info.mode & 0o777).toString(8)} ${info.size} ${(await readFile(join(dir, name))).toString('base64')}`;
  }
  return out;
}

describe('one server per data dir', () => {
  it('refuses a second serve on a data dir in use (exit 2, one line naming the dir and the pid) and writes nothing there', async () => {
    const dataDir = await tempDir();
    const first = await spawnServer(dataDir);
    try {
      const before = await dirBytes(dataDir);
      const second = spawnTs('server/main.ts', [
        'serve',
        '--data-dir',
        dataDir,
        '--port',
        String(await freePort()),
        '--log-level',
        'warn',
      ]);
      // Bounded: without the lock the second one would serve for ever.
      const timer = setTimeout(() => second.kill('SIGKILL'), 20_000);
      const { code } = await second.exited;
      clearTimeout(timer);
      expect(code).toBe(2);
      const lines = second.output().trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain('DATA_DIR_LOCKED');
      expect(lines[0]).toContain(dataDir);
      expect(lines[0]).toContain(`pid ${first.child.pid}`);
      expect(await dirBytes(dataDir)).toEqual(before);
      // The first one still serves.
      const admin = createAdminClient({ url: first.url, adminKey: first.adminKey });
      expect(await admin.groups.list.query({})).toEqual([]);
    } finally {
      first.kill('SIGTERM');
      await first.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('starts again at once on the same dir and port right after kill -9, with what was acknowledged', async () => {
    const dataDir = await tempDir();
    const first = await spawnServer(dataDir);
    const admin = createAdminClient({ url: first.url, adminKey: first.adminKey });
    const group = await admin.groups.create.mutate({ name: 'Kept' });
    first.kill('SIGKILL');
    await first.exited;
    // No wait for staleness: the kernel dropped the lock with the process.
    const again = await spawnServer(dataDir, [], first.port);
    try {
      const after = createAdminClient({ url: again.url, adminKey: again.adminKey });
      expect((await after.groups.list.query({})).map((g) => g.id)).toEqual([group.id]);
      expect((await readFile(join(dataDir, 'server.lock'), 'utf8')).trim()).toBe(String(again.child.pid));
    } finally {
      again.kill('SIGTERM');
      await again.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses a second server in the same process too, and lets one start once the first stopped', async () => {
    await using srv = await startTestServer();
    const refused = await startTestServer({ dataDir: srv.dataDir }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(DataDirLockedError);
    expect((refused as DataDirLockedError).holderPid).toBe(process.pid);
    await srv.stop();
    await using again = await startTestServer({ dataDir: srv.dataDir });
    expect(await again.admin.groups.list.query({})).toEqual([]);
  });
});
