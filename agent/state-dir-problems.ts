/** One line for a state dir the agent cannot write in (full, read-only, gone), with what it means. */
export function cannotWrite(dir: string, error: unknown, meaning: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  const why =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? 'the disk is full'
      : code === 'EROFS'
        ? 'it is on a read-only file system'
        : code === 'EACCES' || code === 'EPERM'
          ? 'this user may not write there'
          : code === 'ENOENT'
            ? 'it was removed'
            : (error as Error).message;
  return `cannot write in the state dir ${dir} (${code ?? 'error'}: ${why}): ${meaning}. Free space or fix the mount, then start the agent again`;
}
