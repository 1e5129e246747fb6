import { execFileSync } from 'node:child_process';

/**
 * Whether this process may mount (root, and a kernel that lets it): the tests that need a full disk
 * (a tiny tmpfs), a read-only one or a bind mount skip themselves otherwise.
 */
export function canMount(): boolean {
  try {
    const dir = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', dir], { stdio: 'ignore' });
      execFileSync('umount', [dir], { stdio: 'ignore' });
      execFileSync('mount', ['--bind', dir, dir], { stdio: 'ignore' });
      execFileSync('umount', [dir], { stdio: 'ignore' });
    } finally {
      execFileSync('rmdir', [dir]);
    }
    return true;
  } catch {
    return false;
  }
}
