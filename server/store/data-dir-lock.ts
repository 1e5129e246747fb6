import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { join } from 'node:path';
import fsx from 'fs-native-extensions';

/** The file in the data dir whose lock says a process owns the dir; it holds that process's pid. */
export const LOCK_FILE_NAME = 'server.lock';

const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

/** Another process holds the data dir: a server, or an offline backup or restore. */
export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
  readonly code = 'DATA_DIR_LOCKED';
  constructor(
    readonly dir: string,
    /** The holder's pid as it wrote it, or null if it had not written it yet. */
    readonly holderPid: number | null,
  ) {
    super(
      `DATA_DIR_LOCKED: data dir ${dir} is in use by another connector-server process ` +
        `(pid ${holderPid ?? 'unknown'})`,
    );
  }
}

/** The data dir, owned by this process until `release()`. */
export interface DataDirLock {
  readonly dir: string;
  readonly file: string;
  /** Gives the dir up; idempotent. The lock file stays (removing it would race a new holder). */
  release(): Promise<void>;
}

/**
 * Takes the exclusive lock on `dir` (which must exist) or throws DataDirLockedError, without writing
 * anything when another process holds it.
 *
 * The lock is the kernel's (an open-file-description lock on Linux, flock on macOS, LockFileEx on
 * Windows, through fs-native-extensions' prebuilt binaries), held by an open descriptor of
 * `server.lock`: the kernel drops it the moment the process dies however it dies (SIGKILL, OOM
 * kill, power cut), so a restart never waits for a stale lock, and there is no pid-file race to
 * lose: whether a pid is alive never decides anything. The pid written in the file only names the
 * holder in the refusal. Two descriptors of one process exclude each other too (the lock belongs to
 * the open file, not the process), so an in-process second server is refused as well.
 */
export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const file = join(dir, LOCK_FILE_NAME);
  // Opened read-write (an exclusive lock needs it), created if missing, never through a link, and
  // never truncated before the lock is ours: a refused process leaves the file as it found it.
  const handle = await open(file, constants.O_RDWR | constants.O_CREAT | NOFOLLOW, 0o600);
  let locked: boolean;
  try {
    locked = fsx.tryLock(handle.fd);
  } catch (error) {
    await handle.close();
    throw error;
  }
  if (!locked) await refuse(handle, dir);
  await handle.truncate(0);
  await handle.write(`${process.pid}\n`, 0);
  let released = false;
  return {
    dir,
    file,
    release: async () => {
      if (released) return;
      released = true;
      // Closing the descriptor is what gives the lock up.
      await handle.close();
    },
  };
}

async function refuse(handle: FileHandle, dir: string): Promise<never> {
  let holderPid: number | null = null;
  try {
    const text = (await handle.readFile('utf8')).trim();
    if (/^\d+$/.test(text)) holderPid = Number(text);
  } finally {
    await handle.close();
  }
  throw new DataDirLockedError(dir, holderPid);
}
