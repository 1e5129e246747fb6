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
