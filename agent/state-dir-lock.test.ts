import { access, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockStateDir, StateDirBusyError } from './state-dir-lock.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function stateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ce-lock-'));
  dirs.push(dir);
  return dir;
}

describe('lockStateDir', () => {
  it('one holder at a time; released, the next one takes it', async () => {
    const dir = await stateDir();
    const first = await lockStateDir(dir);
    // This process holds it: a second lock of the same pid would be a restarted container's pid 1,
    // so a live holder is simulated by the parent process (alive, another pid).
    await writeFile(join(dir, 'agent.pid'), JSON.stringify({ pid: process.ppid, start: null }));
    await expect(lockStateDir(dir)).rejects.toBeInstanceOf(StateDirBusyError);
    await expect(lockStateDir(dir)).rejects.toThrow(`as pid ${process.ppid}`);
    await first.release(); // not ours any more: left as it is
    expect(JSON.parse(await readFile(join(dir, 'agent.pid'), 'utf8')).pid).toBe(process.ppid);
  });

  it('takes over a lock left by a process that is gone, or one naming its own pid (a container restarted as pid 1)', async () => {
    const dir = await stateDir();
    await writeFile(join(dir, 'agent.pid'), JSON.stringify({ pid: 2 ** 22 + 7, start: 1 }));
    const taken = await lockStateDir(dir);
    expect(JSON.parse(await readFile(join(dir, 'agent.pid'), 'utf8')).pid).toBe(process.pid);
    await taken.release();
    await writeFile(join(dir, 'agent.pid'), JSON.stringify({ pid: process.pid, start: null }));
    const again = await lockStateDir(dir);
    await again.release();
    await expect(readFile(join(dir, 'agent.pid'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('an empty lock file younger than a few seconds is another agent writing it: busy', async () => {
    const dir = await stateDir();
    await writeFile(join(dir, 'agent.pid'), '');
    await expect(lockStateDir(dir)).rejects.toBeInstanceOf(StateDirBusyError);
  });

  it('a takeover under way (agent.pid.takeover) is waited for; one left by an agent that died mid-takeover goes after a few seconds', async () => {
    const dir = await stateDir();
    const lockFile = join(dir, 'agent.pid');
    const takeover = join(dir, 'agent.pid.takeover');
    await writeFile(lockFile, JSON.stringify({ pid: 2 ** 22 + 7, start: 1 }));
    await writeFile(takeover, '');
    // Another agent is taking the dead holder's lock over: this one waits, then says busy.
    await expect(lockStateDir(dir)).rejects.toBeInstanceOf(StateDirBusyError);
    expect(JSON.parse(await readFile(lockFile, 'utf8')).pid).toBe(2 ** 22 + 7);
    // That agent died in the middle: its takeover file ages, and is then removed.
    const past = new Date(Date.now() - 10_000);
    await utimes(takeover, past, past);
    const taken = await lockStateDir(dir);
    expect(JSON.parse(await readFile(lockFile, 'utf8')).pid).toBe(process.pid);
    await expect(access(takeover)).rejects.toMatchObject({ code: 'ENOENT' });
    await taken.release();
  });
});
