import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** One line for a state dir the agent cannot write in (full, read-only, not its own, gone): what it means and the fix. */
export function cannotWrite(dir: string, error: unknown, meaning: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  const [why, fix] =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? ['the disk is full', 'Free space']
      : code === 'EROFS'
        ? ['it is on a read-only file system', 'Mount it read-write, or give another --state-dir']
        : code === 'EACCES' || code === 'EPERM'
          ? [
              'this user may not write there',
              "Make it and every file in it the agent's user's (chown -R, mode 0700), or run the agent as the user that owns it, or give another --state-dir",
            ]
          : code === 'ENOENT'
            ? ['it was removed', 'Check what removes it']
            : [(error as Error).message, 'Free space or fix the mount'];
  return `cannot write in the state dir ${dir} (${code ?? 'error'}: ${why}): ${meaning}. ${fix}, then start the agent again`;
}

/**
 * One line when a directory above the state dir may be written by other users and has no sticky
 * bit, or null. Such a user could rename the state dir away and put one of their own in its place
 * between the agent's ownership check and its writes (the private key among them). /tmp-like dirs
 * (sticky) and a group that is the agent's own are fine. Said, not refused: hosts are set up so.
 */
export async function openAncestor(dir: string): Promise<string | null> {
  const gid = process.getgid?.();
  let child = resolve(dir);
  for (let parent = dirname(child); parent !== child; child = parent, parent = dirname(parent)) {
    const info = await stat(parent).catch(() => null);
    if (!info) return null;
    const sticky = (info.mode & 0o1000) !== 0;
    const others = (info.mode & 0o002) !== 0;
    const group = (info.mode & 0o020) !== 0 && info.gid !== gid;
    if (!sticky && (others || group)) {
      const mode = (info.mode & 0o7777).toString(8).padStart(4, '0');
      return `${parent}, above the state dir ${dir}, may be written by other users (mode ${mode}, no sticky bit): one could replace the state dir with one of their own while the agent runs. Make it writable by its owner only (chmod go-w ${parent}), or give a --state-dir under a directory that is`;
    }
  }
  return null;
}
