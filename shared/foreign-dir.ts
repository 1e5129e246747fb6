import { readFileSync } from 'node:fs';
import { lstat } from 'node:fs/promises';

/** How a dir is named in messages: e.g. `{ what: 'state dir', flag: '--state-dir' }`. */
export interface DirLabel {
  what: string;
  flag: string;
}

/** The server's data dir, as its commands name it. */
export const DATA_DIR_LABEL: DirLabel = { what: 'data dir', flag: '--data-dir' };

/** A user's name from /etc/passwd, or null (no such file, no such uid: a container's numeric uid). */
function userName(uid: number): string | null {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && Number(id) === uid) return name;
    }
  } catch {
    // No passwd file (Windows, a minimal image): the uid alone says it.
  }
  return null;
}

const who = (uid: number) => {
  const name = userName(uid);
  return name ? `uid ${uid} (${name})` : `uid ${uid}`;
};

/**
 * The one line for a state or data dir owned by another user, or null when `dir` is not (anymore)
 * another user's, or is a link (`chown -R` does not follow one). A plain `chown` of the dir is no
 * fix: the files in it stay the other user's (0600), and the next start fails on them. Root running
 * a command on the service user's dir wants to run it as that user, not to take the dir away from
 * the service; a user whose dir an earlier `sudo` run made root's wants it back, files included.
 * Both are said.
 */
export async function foreignDirMessage(dir: string, label: DirLabel): Promise<string | null> {
  const me = process.getuid?.();
  if (me === undefined) return null;
  const link = await lstat(dir).catch(() => null);
  if (!link || link.isSymbolicLink()) return null;
  const owner = link.uid;
  if (owner === me) return null;
  const ownerName = userName(owner);
  const runAs = `sudo -u ${ownerName ?? `'#${owner}'`} …`;
  const takeBack = `${me === 0 ? '' : 'sudo '}chown -R ${userName(me) ?? me} ${dir}`;
  return (
    `${label.what} ${dir} is owned by ${who(owner)}, not by this user, ${who(me)}: ` +
    `run this command as its owner (${runAs}), or give the dir and every file in it to this user (${takeBack}), ` +
    `or use ${label.flag} with a directory of your own`
  );
}
