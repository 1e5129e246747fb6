import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { type DirLabel, foreignDirMessage } from './foreign-dir.js';

export type { DirLabel } from './foreign-dir.js';

// Both sides keep secrets in a dir of their own (the agent's state dir, the server's data dir):
// whoever else can write there can plant links that redirect a write of a private key, or make a
// foreign file be read as ours. So the dir must be this user's, and no file in it is opened
// through a link.

/** O_NOFOLLOW where the platform has it (not on Windows, where links need privileges anyway). */
const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

/** The code readFileNoFollow throws with for a FIFO, a socket or a device at the name. */
export const NOT_A_FILE = 'ENOTREGULAR';

/** Why a dir cannot hold this process's secrets. */
export type PrivateDirProblem =
  | 'DIR_NOT_CREATED'
  | 'DIR_NOT_OWNED'
  | 'DIR_NOT_A_DIRECTORY'
  | 'DIR_NOT_PRIVATE';

/** The state or data dir cannot be used; the message names the dir, the reason and the fix. */
export class PrivateDirError extends Error {
  override readonly name = 'PrivateDirError';
  constructor(
    readonly code: PrivateDirProblem,
    message: string,
  ) {
    super(message);
  }
}

/** A path on the way to a dir to create exists and is not a directory. */
class NotADirectory extends Error {
  constructor(readonly path: string) {
    super(`${path} is not a directory`);
  }
}

/**
 * `mkdir -p` of a private dir (0700; its missing parents 0755), one level at a time. Not `mkdir(dir, { recursive: true })`: on Node 20
 * that loops for ever (one core at 100 %) on a path under /proc, where every mkdir answers ENOENT.
 * Here the walk is bounded by the path's depth and each failure is the one the kernel gave.
 */
async function makeDirs(dir: string): Promise<void> {
  const missing: string[] = [];
  let at = resolve(dir);
  for (;;) {
    const info = await stat(at).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return null;
      if (error.code === 'ENOTDIR') return 'not-a-dir' as const;
      throw error;
    });
    if (info === 'not-a-dir') {
      missing.unshift(at);
    } else if (info) {
      if (!info.isDirectory()) throw new NotADirectory(at);
      break;
    } else {
      missing.unshift(at);
    }
    const parent = dirname(at);
    if (parent === at) break;
    at = parent;
  }
  const target = resolve(dir);
  for (const path of missing) {
    try {
      // Only the dir itself is private; parents made on the way are made as `mkdir -p` makes
      // them (0755 less the umask): a parent 0700 would shut other users out of more than ours.
      await mkdir(path, { mode: path === target ? 0o700 : 0o755 });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && (await stat(path)).isDirectory()) continue;
      if (code === 'EEXIST' || code === 'ENOTDIR')
        throw new NotADirectory(code === 'EEXIST' ? path : dirname(path));
      throw error;
    }
  }
}

/**
 * Creates `dir` (mode 0700) or checks the one there: it must be a directory owned by this user (a
 * link to one is fine if the link is this user's or root's). Group/other bits on a dir of ours are
 * taken away. Throws PrivateDirError otherwise. On Windows (no uids) it only creates the dir.
 */
export async function ensurePrivateDir(dir: string, label: DirLabel): Promise<void> {
  const uid = process.getuid?.();
  // Recursive: a chown of the dir alone leaves the files in it (0600) the other user's.
  const fix = `use a directory this user owns (${label.flag}) or give it and every file in it to this user (chown -R ${uid ?? ''} ${dir})`;
  try {
    await makeDirs(dir);
  } catch (error) {
    if (error instanceof NotADirectory) {
      const where =
        error.path === resolve(dir)
          ? `${dir} is not a directory`
          : `${error.path} is not a directory, so ${dir} cannot be made in it`;
      throw new PrivateDirError(
        'DIR_NOT_A_DIRECTORY',
        `${label.what} ${where}: ${label.flag} another directory`,
      );
    }
    const code = (error as NodeJS.ErrnoException).code;
    throw new PrivateDirError(
      'DIR_NOT_CREATED',
      `${label.what} ${dir} cannot be created (${code ?? error}): create it for this user, or ${label.flag} another directory`,
    );
  }
  if (uid === undefined) return;
  const link = await lstat(dir);
  if (link.isSymbolicLink() && link.uid !== uid && link.uid !== 0) {
    throw new PrivateDirError(
      'DIR_NOT_OWNED',
      `${label.what} ${dir} is a symbolic link owned by uid ${link.uid}, not by this user (uid ${uid}): ${fix}`,
    );
  }
  // The checks and the chmod apply to the dir opened, not to whatever the path names a moment later.
  let handle: FileHandle;
  try {
    handle = await open(dir, constants.O_RDONLY | (constants.O_DIRECTORY ?? 0));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR')
      throw new PrivateDirError('DIR_NOT_A_DIRECTORY', `${label.what} ${dir} is not a directory: ${fix}`);
    // Another user's 0700 dir cannot even be opened to check its owner: its owner is named all the same.
    const foreign = code === 'EACCES' || code === 'EPERM' ? await foreignDirMessage(dir, label) : null;
    if (foreign) throw new PrivateDirError('DIR_NOT_OWNED', foreign);
    throw error;
  }
  try {
    const info = await handle.stat();
    if (info.uid !== uid) {
      throw new PrivateDirError(
        'DIR_NOT_OWNED',
        (await foreignDirMessage(dir, label)) ??
          `${label.what} ${dir} is owned by uid ${info.uid}, not by this user (uid ${uid}): ${fix}`,
      );
    }
    if ((info.mode & 0o077) === 0) return;
    try {
      await handle.chmod(0o700);
    } catch (error) {
      throw new PrivateDirError(
        'DIR_NOT_PRIVATE',
        `${label.what} ${dir} is open to group or others (mode ${(info.mode & 0o777).toString(8)}) and could not be made 0700 ` +
          `(${(error as NodeJS.ErrnoException).code ?? error}): chmod 700 ${dir}, or ${label.flag} another directory`,
      );
    }
  } finally {
    await handle.close();
  }
}

/**
 * The fsync calls durability rests on, behind one seam: the real ones by default; a test passes a
 * wrapper that calls them and notes when, to check that a write resolves only after its sync.
 */
export interface FileSync {
  /** fsync of an open file (fdatasync when `dataOnly`: the data and the size, not the times). */
  file(handle: FileHandle, path: string, dataOnly?: boolean): Promise<void>;
  /** fsync of a folder: makes the entries in it (a rename, an unlink) durable. */
  folder(dir: string): Promise<void>;
}

/** The real fsync and fdatasync. */
export const realSync: FileSync = {
  file: (handle, _path, dataOnly = false) => (dataOnly ? handle.datasync() : handle.sync()),
  async folder(dir) {
    const handle = await open(dir, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
};

export interface DurableWriteOptions {
  /** @default 0o600 */
  mode?: number;
  /** @default realSync */
  sync?: FileSync;
}

/**
 * Writes `text` to `file` so that after it resolves the content survives a crash or power cut, and
 * so that a link planted at the file or its temp name is never written through: a temp file of a
 * random name created exclusively (never an existing file or link), fsync, rename over `file` (which
 * replaces a link rather than following it), fsync of the folder.
 */
export async function writeFileDurably(
  file: string,
  text: string,
  { mode = 0o600, sync = realSync }: DurableWriteOptions = {},
): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(8).toString('hex')}`;
  const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | NOFOLLOW, mode);
  try {
    await handle.writeFile(text);
    await sync.file(handle, tmp);
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw error;
  }
  await handle.close();
  try {
    await rename(tmp, file);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
  await sync.folder(dirname(file));
}

/** The name writeFileDurably gives its temp file: `<file>.tmp-<16 hex digits>`. */
const TEMP_NAME = /\.tmp-[0-9a-f]{16}$/;

/**
 * Removes the temp files writeFileDurably left in `dir` when its process was killed between the
 * create and the rename (kill -9, a power cut): a copy of what was being written, one of them the
 * key pair of an enrollment never sent, kept for ever otherwise. Call it only while holding the
 * dir's lock: a temp of a live writer would go too. Answers how many were removed.
 */
export async function removeStaleTemps(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  let removed = 0;
  for (const name of names) {
    if (!TEMP_NAME.test(name)) continue;
    const path = join(dir, name);
    const info = await lstat(path).catch(() => null);
    if (!info?.isFile()) continue;
    if (
      await unlink(path).then(
        () => true,
        () => false,
      )
    )
      removed++;
  }
  return removed;
}

/** Makes the entries of `dir` (a rename, an unlink) durable. */
export function syncDir(dir: string, sync: FileSync = realSync): Promise<void> {
  return sync.folder(dir);
}

/**
 * Reads `file` as text without following a link at its name. A link fails with ELOOP (on Linux
 * and macOS), a directory with EISDIR, anything else that is not a regular file with NOT_A_FILE;
 * ENOENT and other errors are thrown as they come.
 */
export async function readFileNoFollow(file: string): Promise<string> {
  // Non-blocking: a FIFO opened for reading waits for a writer, for ever (and the agent with its
  // state dir's lock held); read only once it is known to be a file (a device would never end).
  const handle = await open(file, constants.O_RDONLY | NOFOLLOW | constants.O_NONBLOCK);
  try {
    const stats = await handle.stat();
    if (stats.isDirectory())
      throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${file}'`), {
        code: 'EISDIR',
      });
    if (!stats.isFile())
      throw Object.assign(new Error(`${file} is not a regular file (a FIFO, a socket or a device)`), {
        code: NOT_A_FILE,
      });
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}
