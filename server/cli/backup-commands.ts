import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { ERROR_REASONS, isErrorReason } from '../../shared/errors.js';
import { DATA_DIR_LABEL, foreignDirMessage } from '../../shared/foreign-dir.js';
import { syncDir } from '../../shared/private-files.js';
import { BACKUP_PATH } from '../backup/http-endpoint.js';
import { type AdminEnv, MAX_ADMIN_TIMEOUT_S, parseOptions } from './admin-common.js';
import { resolveAdminKey } from './admin-key.js';
import { CliError } from './cli-error.js';
import {
  ADMIN_CALL_TIMEOUT_S,
  adminFetch,
  explainUnreachable,
  isTlsMisconfiguration,
  NoAnswerInTime,
} from './connection.js';
import { wholeNumber } from './flags.js';

const NOFOLLOW = constants.O_NOFOLLOW ?? 0;

interface BackupOptions {
  out: string;
  server: string;
  adminKeyFile?: string;
  dataDir?: string;
  caFile?: string;
  timeout: string;
}

interface RestoreFlags {
  from: string;
  dataDir: string;
  force?: boolean;
  auditFile?: string;
}

/** `backup --out FILE` (running server, or `--data-dir` of a stopped one) and `restore --from FILE --data-dir DIR [--force]`. */
export function registerBackupCommands(program: Command, env: AdminEnv): void {
  program
    .command('backup')
    .description(
      'write a backup (store, signing keys, secret, admin key) of the running server to --out, or of a stopped one with --data-dir; a single server on the embedded store only (replicas on PostgreSQL: pg_dump, README "Back up and restore replicas")',
    )
    .requiredOption('--out <file>', 'the backup file to write (mode 0600; replaced if it exists)')
    .option('--server <url>', 'the running server (env CONNECTOR_SERVER)', env.server)
    .option(
      '--admin-key-file <file>',
      'file holding an admin-scope API key (default: CONNECTOR_ADMIN_KEY, then ./data/admin.key)',
    )
    .option(
      '--data-dir <dir>',
      'back up this stopped server’s data dir instead of asking a running one (with --server: only where admin.key is, as for the admin commands)',
    )
    .option(
      '--ca-file <file>',
      'PEM certificate of the CA that signed the server certificate, for https:// servers a private CA signed (env CONNECTOR_CA_FILE)',
      env.caFile,
    )
    .option(
      '--timeout <seconds>',
      "how long to wait for the running server's first answer (the backup then streams as long as it takes)",
      String(ADMIN_CALL_TIMEOUT_S),
    )
    .action(async (options: BackupOptions, command: Command) => {
      await checkOutFolder(options.out);
      const { BackupFileError } = await import('../backup/format.js');
      // --server on the command line asks the running server, whatever else is given: with it,
      // --data-dir finds admin.key, as it does for every admin command.
      const asked = command.getOptionValueSource('server') === 'cli';
      const result =
        options.dataDir && !asked
          ? await offline(options.dataDir, options.out).catch((error) => {
              throw error instanceof BackupFileError ? new CliError(error.message) : error;
            })
          : await online(options, env);
      console.error(
        `backup written to ${result.file}: ${result.connectors} connectors, snapshot at ` +
          `${new Date(result.snapshotAt).toISOString()}, ${result.bytes} bytes, mode 0600. ` +
          'It holds the server’s secrets: keep it as safe as the data dir.',
      );
      console.log(`${result.sha256}  ${result.file}`);
    });

  program
    .command('restore')
    .description(
      'restore a backup into a data dir (the server stopped), replaying revocations and deletions made since; a single server on the embedded store only (replicas on PostgreSQL: pg_restore)',
    )
    .requiredOption('--from <file>', 'the backup file')
    .requiredOption('--data-dir <dir>', 'the data dir to restore into (empty, or with --force)')
    .option(
      '--force',
      'replace the state of a data dir that is not empty (its audit log is kept and replayed)',
    )
    .option(
      '--audit-file <file>',
      'the audit log whose revocations and deletions after the backup are replayed (default: <data-dir>/audit.jsonl)',
    )
    .action(async (flags: RestoreFlags) => {
      const { restoreBackup, RestoreRefusedError } = await import('../backup/offline.js');
      const { BackupFileError } = await import('../backup/format.js');
      const { totalReplayed } = await import('../backup/replay.js');
      const result = await withDataDirErrors(
        flags.dataDir,
        'stop the server first (restore replaces its state)',
        () =>
          restoreBackup({
            from: flags.from,
            dataDir: flags.dataDir,
            force: Boolean(flags.force),
            auditFile: flags.auditFile,
          }),
      ).catch((error) => {
        if (error instanceof BackupFileError) throw new CliError(error.message);
        if (error instanceof RestoreRefusedError) throw new CliError(error.message, 2);
        throw error;
      });
      const r = result.replayed;
      console.log(
        `restored ${flags.from} (snapshot at ${new Date(result.snapshotAt).toISOString()}, ` +
          `${result.connectors} connectors once the changes below are replayed) into ${flags.dataDir}.`,
      );
      if (result.auditGapFrom)
        console.error(
          `warning: the audit log starts at ${result.auditGapFrom}, after the backup's snapshot at ${new Date(result.snapshotAt).toISOString()}: ` +
            'revocations and deletions made between the two are not in it and were not replayed, so connectors revoked then are enabled again. ' +
            'Revoke them again (connectors list, connectors revoke), or restore with an audit log that reaches back (its rotated files, audit.jsonl.N, from a copy).',
        );
      if (result.signingKeysKept.length > 0)
        console.log(
          `Kept ${result.signingKeysKept.length} signing key(s) made after the backup from ${flags.dataDir}/signing-keys.json (${result.signingKeysKept.join(', ')}): identities they signed stay valid.`,
        );
      if (result.signingKeysMissing.length > 0)
        console.error(
          `warning: signing key(s) ${result.signingKeysMissing.join(', ')} were made after the backup and are not in it (nor in ${flags.dataDir}): ` +
            'identities they signed will be refused (IDENTITY_UNKNOWN_SIGNER) and those agents retry without end. ' +
            'If the old server’s signing-keys.json survives, restore again with --force into a dir holding it and its secret.key; ' +
            'else enroll those hosts again: on each, connector-agent unenroll --force (the server no longer knows the identity), then run it with a provisioning key.',
        );
      console.log(
        result.auditFiles.length === 0
          ? 'No audit log given or found: nothing replayed. Anything revoked or deleted after the backup is back; pass --audit-file with the old server’s audit.jsonl to take it back.'
          : `Replayed ${totalReplayed(r)} change(s) the audit log recorded after the backup: ` +
              `${r.connectorsRevoked} connector(s) revoked, ${r.revocationsConfirmed} revocation(s) confirmed by their host, ` +
              `${r.connectorsDeleted} connector(s) deleted, ` +
              `${r.groupsDeleted} group(s) deleted, ${r.apiKeysDeleted} admin key(s) deleted, ` +
              `${r.provisioningKeysReplaced} provisioning key(s) replaced, ${r.signingKeysRetired} signing key(s) retired.`,
      );
    });
}

/** Runs `action` on the data dir `dir`, turning a held lock or an unusable dir into one line (exit 2). */
export async function withDataDirErrors<T>(dir: string, fix: string, action: () => Promise<T>): Promise<T> {
  const { DataDirLockedError } = await import('../store/data-dir-lock.js');
  const { PrivateDirError } = await import('../../shared/private-files.js');
  try {
    return await action();
  } catch (error) {
    if (error instanceof DataDirLockedError) throw new CliError(`${error.message}: ${fix}`, 2);
    if (error instanceof PrivateDirError) {
      const foreign = error.code === 'DIR_NOT_OWNED' ? await foreignDirMessage(dir, DATA_DIR_LABEL) : null;
      throw new CliError(foreign ?? error.message, 2);
    }
    const code = (error as NodeJS.ErrnoException).code;
    // Another user's 0700 data dir cannot even be opened to check its owner, or its files read
    // (a data file's own error names the code in its message): say whose it is.
    const denied = code === 'EACCES' || code === 'EPERM' || /\b(EACCES|EPERM)\b/.test(String(error));
    const foreign = denied ? await foreignDirMessage(dir, DATA_DIR_LABEL) : null;
    if (foreign) throw new CliError(foreign, 2);
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EROFS')
      throw new CliError(`${(error as Error).message}`, 2);
    throw error;
  }
}

async function offline(dataDir: string, out: string) {
  const { offlineBackup } = await import('../backup/offline.js');
  return withDataDirErrors(
    dataDir,
    'a running server is backed up online: connector-server backup --out FILE --server URL',
    () => offlineBackup(dataDir, out),
  );
}

/**
 * Streams the running server's backup into a temp file beside `--out` (created exclusively, 0600),
 * checks it whole, then renames it into place and makes that durable: `--out` never holds a
 * partial or unverified file.
 */
async function online(options: BackupOptions, env: AdminEnv) {
  const { decodeBackup, BackupFileError } = await import('../backup/format.js');
  // admin.key is looked for where the other admin commands look: --data-dir, CONNECTOR_DATA_DIR, ./data.
  const adminKey = resolveAdminKey({ ...options, dataDir: options.dataDir ?? env.dataDir }, env.adminKey);
  const url = `${options.server.replace(/\/+$/, '')}${BACKUP_PATH}`;
  const transport = adminFetch(options.server, options.caFile) ?? fetch;
  const seconds = parseOptions(z.object({ timeout: wholeNumber(1, MAX_ADMIN_TIMEOUT_S) }), options).timeout;
  // Bounded until the answer's headers: a frozen server is said, not waited on; the body may take long.
  const waiting = new AbortController();
  const timer = setTimeout(() => waiting.abort(new NoAnswerInTime(seconds)), seconds * 1000);
  let response: Response;
  try {
    response = await transport(url, {
      headers: { authorization: `Bearer ${adminKey}` },
      signal: waiting.signal,
    });
  } catch (error) {
    throw new CliError(
      `${explainUnreachable(error, options.server, { caGiven: Boolean(options.caFile) })} (a stopped server is backed up with --data-dir)`,
      isTlsMisconfiguration(error) ? 2 : 1,
    );
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok || !response.body) {
    const body = (await response.json().catch(() => null)) as {
      error?: { reason?: string; message?: string };
    } | null;
    const reason = body?.error?.reason;
    if (isErrorReason(reason))
      throw new CliError(`${reason}: ${body?.error?.message}\n  fix: ${ERROR_REASONS[reason].hint}`);
    throw new CliError(`the server at ${options.server} answered ${response.status} to ${BACKUP_PATH}`);
  }
  const tmp = `${options.out}.tmp-${randomBytes(8).toString('hex')}`;
  const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | NOFOLLOW, 0o600);
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    try {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        bytes += chunk.length;
        await handle.write(chunk);
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    const contents = decodeBackup(await readFile(tmp), `the backup received from ${options.server}`);
    await rename(tmp, options.out);
    await syncDir(dirname(options.out));
    return {
      file: options.out,
      sha256: hash.digest('hex'),
      bytes,
      snapshotAt: contents.snapshotAt,
      connectors: Object.keys(contents.store.connectors).length,
    };
  } catch (error) {
    await unlink(tmp).catch(() => {});
    if (error instanceof BackupFileError) throw new CliError(error.message);
    if ((error as Error).name === 'TypeError')
      throw new CliError(
        `the connection to ${options.server} broke during the backup (${(error as Error).message}); nothing was written`,
      );
    throw error;
  }
}

/** Before anything is asked of a server: `--out` must name a file in a folder that exists. */
async function checkOutFolder(out: string): Promise<void> {
  // "-" reads as standard output, which a backup is not written to (it is checked whole in a temp
  // file, then renamed): taken as a name, it left every secret in a file called "-" here.
  if (out === '-')
    throw new CliError(
      '--out -: a backup is written to a file, never to standard output (it is checked whole before it is kept): name the file (e.g. --out /var/backups/connector/$(date +%F).jsonl)',
      2,
    );
  const folder = dirname(out);
  const info = await stat(folder).catch((error: NodeJS.ErrnoException) => error);
  if (info instanceof Error) {
    if (info.code === 'ENOENT')
      throw new CliError(
        `--out: the folder ${folder} does not exist: create it first (mkdir -p ${folder})`,
        2,
      );
    throw new CliError(`--out: the folder ${folder} cannot be used (${info.code ?? info.message})`, 2);
  }
  if (!info.isDirectory()) throw new CliError(`--out: ${folder} is not a folder`, 2);
  const target = await stat(out).catch(() => null);
  if (target?.isDirectory()) throw new CliError(`--out: ${out} is a folder: name the backup file in it`, 2);
}
