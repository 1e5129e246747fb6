import { describe, expect, it } from 'vitest';
import { cannotWrite } from './state-dir-problems.js';

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
