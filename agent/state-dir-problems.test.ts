import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cannotWrite, openAncestor } from './state-dir-problems.js';

const failed = (code: string) => Object.assign(new Error(`${code}: failed`), { code });

describe('cannotWrite', () => {
  it('gives the fix that fits the failure: free space for a full disk, ownership for one not the agent user’s', () => {
    expect(cannotWrite('/var/lib/connector-agent', failed('ENOSPC'), 'the identity is not saved')).toBe(
      'cannot write in the state dir /var/lib/connector-agent (ENOSPC: the disk is full): the identity is not saved. Free space, then start the agent again',
    );
    const denied = cannotWrite('/srv/agent', failed('EACCES'), 'the identity is not saved');
    expect(denied).toContain('(EACCES: this user may not write there)');
    expect(denied).toContain("Make it and every file in it the agent's user's (chown -R, mode 0700)");
    expect(denied).not.toContain('Free space');
    expect(cannotWrite('/srv/agent', failed('EROFS'), 'x')).toContain(
      'Mount it read-write, or give another --state-dir',
    );
  });
});

describe('openAncestor', () => {
  it('names a dir above the state dir that other users may write without a sticky bit; a sticky one (/tmp) is fine', async () => {
    const root = await mkdtemp(join(tmpdir(), 'ce-open-ancestor-'));
    try {
      const parent = join(root, 'shared');
      const stateDir = join(parent, 'agent', 'state');
      await mkdir(stateDir, { recursive: true });
      await chmod(root, 0o755);
      expect(await openAncestor(stateDir)).toBeNull(); // tmpdir() itself is sticky
      await chmod(parent, 0o777);
      const line = await openAncestor(stateDir);
      expect(line).toContain(
        `${parent}, above the state dir ${stateDir}, may be written by other users (mode 0777, no sticky bit)`,
      );
      expect(line).toContain(`chmod go-w ${parent}`);
      await chmod(parent, 0o1777);
      expect(await openAncestor(stateDir)).toBeNull();
      await chmod(parent, 0o755);
      await chmod(root, 0o757);
      expect(await openAncestor(stateDir)).toContain(`${root}, above the state dir`);
    } finally {
      await chmod(root, 0o755);
      await rm(root, { recursive: true, force: true });
    }
  });
});
