import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually } from './helpers/agents.js';
import { repoRoot, spawnProcess } from './helpers/processes.js';

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A node process that starts `spawnTs(entry, args)` and prints that child's pid. */
function parentOf(entry: string, args: string[]) {
  const script = `
    const { spawnTs } = await import(${JSON.stringify(join(repoRoot, 'scripts/lib/processes.ts'))});
    const child = spawnTs(${JSON.stringify(entry)}, ${JSON.stringify(args)});
    await child.waitForOutput(/listening on/, 30_000);
    console.log('child pid', child.pid);
    setInterval(() => {}, 1000);`;
  return spawnProcess(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
}

describe('scripts/lib/processes.ts', () => {
  it('a server started with spawnTs stops itself when its parent is killed with SIGKILL', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ce-orphan-'));
    let pid = 0;
    try {
      const parent = parentOf('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
      pid = Number((await parent.waitForOutput(/child pid (\d+)/, 30_000))[1]);
      // Only the parent: as a test runner's worker dies, with no chance to stop its children.
      process.kill(parent.pid, 'SIGKILL');
      await parent.exited;
      expect(isAlive(pid)).toBe(true);
      await eventually('the orphaned server to exit', async () => !isAlive(pid), 10_000);
    } finally {
      if (pid && isAlive(pid)) process.kill(pid, 'SIGKILL');
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('stop() ends the whole process group, grandchildren too', async () => {
    const shell = spawnProcess('sh', ['-c', 'sleep 60 & echo "grandchild $!"; wait']);
    const pid = Number((await shell.waitForOutput(/grandchild (\d+)/))[1]);
    try {
      expect(await shell.stop()).toEqual({ code: null, signal: 'SIGTERM' });
      // Dead at once; the check waits only for the orphaned zombie to be reaped by init.
      await eventually('the grandchild to be gone', async () => !isAlive(pid), 5_000);
    } finally {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});
