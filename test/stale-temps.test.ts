import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnAgent, waitConnected } from './helpers/agents.js';
import { spawnServer } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** What a process killed between writeFileDurably's create and rename leaves: `<file>.tmp-<16 hex>`. */
async function leaveTemps(dir: string, files: string[]): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const names = files.map((file, i) => `${file}.tmp-${String(i).repeat(16)}`);
  for (const name of names) await writeFile(join(dir, name), '{"half":', { mode: 0o600 });
  // Not a temp of ours: kept.
  await writeFile(join(dir, 'notes.tmp-draft'), 'mine', { mode: 0o600 });
  return names;
}

describe('temp files a killed process left are removed by the next start, once it holds the lock', () => {
  it('the agent: its state dir (a key pair of an enrollment never sent among them)', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Killed' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const stateDir = await tempDir('ce-stale-agent-');
    const left = await leaveTemps(stateDir, ['enrollment-key.json', 'status.json']);
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'after-kill'], stateDir);
    try {
      await waitConnected(srv.admin, 'after-kill');
      const names = await readdir(stateDir);
      for (const name of left) expect(names).not.toContain(name);
      expect(names).toContain('notes.tmp-draft');
    } finally {
      agent.kill('SIGTERM');
      await agent.exited;
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('the server: its data dir', async () => {
    const dataDir = join(await tempDir('ce-stale-server-'), 'data');
    const left = await leaveTemps(dataDir, ['store.json', 'secret.key']);
    const server = await spawnServer(dataDir);
    try {
      const names = await readdir(dataDir);
      for (const name of left) expect(names).not.toContain(name);
      expect(names).toContain('notes.tmp-draft');
      expect(names).toContain('store.json');
    } finally {
      server.kill('SIGTERM');
      await server.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
