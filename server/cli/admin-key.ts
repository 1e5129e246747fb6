/** Where an admin command's API key comes from, read and checked before anything is sent. */

import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_KEY_PREFIX, keyIdOf, PROVISIONING_KEY_PREFIX } from '../../shared/protocol.js';
import type { AdminOptions } from './admin-common.js';
import { CliError } from './cli-error.js';

/** More than any key file holds (a key is 60 characters): a file past it is not one, and is not read whole. */
const MOST_KEY_FILE_BYTES = 4096;

/**
 * The admin key: `--admin-key-file` if given (a flag beats the environment, as everywhere), else
 * CONNECTOR_ADMIN_KEY, else `<data-dir>/admin.key`. Every way it can fail is one line naming where
 * the key came from, never the text found there: a file or variable holding the key and anything
 * else (a comment, a second key) would otherwise put the key in the error, and so in a terminal's
 * scrollback or a CI log.
 */
export function resolveAdminKey(
  options: Pick<AdminOptions, 'adminKeyFile' | 'dataDir'>,
  fromEnv: string | undefined,
): string {
  if (!options.adminKeyFile && fromEnv) return checkedKey(fromEnv, 'CONNECTOR_ADMIN_KEY');
  const flag = options.adminKeyFile ? '--admin-key-file' : null;
  const file = options.adminKeyFile ?? join(options.dataDir, 'admin.key');
  let text: string;
  try {
    text = readBounded(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !flag) {
      // No data dir at all: most often no server has run here yet (the first try of a clone).
      const noServerYet = !existsSync(options.dataDir)
        ? ` (no server has run with the data dir ${options.dataDir}: start one first, npm start)`
        : '';
      throw new CliError(
        `no admin API key: ${file} does not exist${noServerYet}; fix: pass --admin-key-file FILE, set CONNECTOR_ADMIN_KEY, or --data-dir the server's data dir`,
        2,
      );
    }
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory, not a file'
          : code === 'EACCES' || code === 'EPERM'
            ? 'permission denied (run as the user that owns it)'
            : (code ?? (error as Error).message);
    throw new CliError(`cannot read the admin key ${flag ? `${flag} ` : ''}${file}: ${why}`, 2);
  }
  if (!text.trim())
    throw new CliError(
      `the admin key file ${file} is empty; fix: point to the file the server wrote (admin.key)`,
      2,
    );
  return checkedKey(text, `${flag ? `${flag} ` : ''}${file}`);
}

/** The first MOST_KEY_FILE_BYTES + 1 bytes of `file`: enough to tell a key file from anything else (/dev/zero included). */
function readBounded(file: string): string {
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(MOST_KEY_FILE_BYTES + 1);
    let length = 0;
    // A few reads at most: a pipe or a device may hand over less than asked each time.
    for (let reads = 0; reads < 64 && length < buffer.length; reads++) {
      const got = readSync(fd, buffer, length, buffer.length - length, null);
      if (got === 0) break;
      length += got;
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** `text` trimmed, if it is one admin key (`cak_<id>_<secret>`); a CliError saying what it is instead otherwise. */
function checkedKey(text: string, from: string): string {
  const key = text.trim();
  if (keyIdOf(key, ADMIN_KEY_PREFIX, 'ak')) return key;
  const lines = key.split(/\r?\n/).length;
  const what =
    text.length > MOST_KEY_FILE_BYTES
      ? `it holds more than ${MOST_KEY_FILE_BYTES} bytes`
      : lines > 1
        ? `it holds ${lines} lines; only the key may be there, alone on its line`
        : key.startsWith(PROVISIONING_KEY_PREFIX)
          ? `it holds a provisioning key (${PROVISIONING_KEY_PREFIX}…), which agents enroll with`
          : key.startsWith(ADMIN_KEY_PREFIX)
            ? `it starts as one (${ADMIN_KEY_PREFIX}…) but is not one whole (a character missing, extra or changed): copy it again`
            : `it does not start with ${ADMIN_KEY_PREFIX}`;
  throw new CliError(
    `the admin key from ${from} is not an admin API key (${ADMIN_KEY_PREFIX}<id>_<secret>, as the server writes to admin.key or api-keys create prints): ${what}; nothing was sent`,
    2,
  );
}
