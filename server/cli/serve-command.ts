import { existsSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { DATA_DIR_LABEL, foreignDirMessage } from '../../shared/foreign-dir.js';
import { SERVE_FLAGS, type ServeFlagValues } from '../config.js';
import { CliError } from './cli-error.js';

/** `serve`: its flags come from SERVE_FLAGS (each also env CONNECTOR_<FLAG>); start-up failures are one line. */
export function registerServeCommand(program: Command): void {
  const serve = program
    .command('serve')
    .description(
      'run the enrollment server (HTTP API, websockets, /healthz, /metrics, /.well-known/jwks.json)',
    );
  for (const spec of Object.values(SERVE_FLAGS)) {
    serve.addOption(
      new Option(
        spec.flag,
        `${spec.help} [env ${spec.env}${spec.default ? `, default ${spec.default}` : ''}]`,
      ),
    );
  }
  // No environment variable, unlike the others: left set, every restart would mint another key.
  serve.addOption(
    new Option(
      '--new-admin-key',
      'write a new admin key to <data-dir>/admin.key at this start even though admin keys exist (locked out: admin.key lost); audited, the old file kept aside',
    ),
  );
  serve.action(async (flags: ServeFlagValues & { newAdminKey?: boolean }) => {
    const { parseServeConfig } = await import('../config.js');
    const { startServer, TlsConfigError } = await import('../app.js');
    const { DataFileError } = await import('../store/data-file.js');
    const { PrivateDirError } = await import('../../shared/private-files.js');
    const { DataDirLockedError } = await import('../store/data-dir-lock.js');
    const { DatabaseStartError, SecretFileError } = await import('../data-files.js');
    let config: ReturnType<typeof parseServeConfig>;
    try {
      const { newAdminKey, ...values } = flags;
      config = { ...parseServeConfig(values), newAdminKey: Boolean(newAdminKey) };
    } catch (error) {
      throw new CliError((error as Error).message, 2);
    }
    let server: Awaited<ReturnType<typeof startServer>>;
    try {
      server = await startServer(config);
    } catch (error) {
      // The operator gave a secret file that cannot be used, or a replica a secret other than the
      // deployment's: theirs to fix, exit 2.
      if (error instanceof SecretFileError)
        throw new CliError(`cannot start: --secret-file ${error.message}`, 2);
      // A replica's data dir without its database URL: the operator's to fix, exit 2.
      const { ReplicaDataDirError } = await import('../replica-marker.js');
      if (error instanceof ReplicaDataDirError) throw new CliError(`cannot start: ${error.message}`, 2);
      const { SecretMismatchError } = await import('../store/postgres/sealed-document.js');
      if (error instanceof SecretMismatchError) throw new CliError(`cannot start: ${error.message}`, 2);
      // A database no start could use as it is (another application's, a newer version's): exit 2,
      // which the shipped unit does not restart (each restart would only say it again).
      if (error instanceof DatabaseStartError)
        throw new CliError(`cannot start: ${error.message}`, error.configuration ? 2 : 1);
      // Exit 1, which the shipped unit restarts: a certificate renewal caught half-written (the new
      // certificate, the old key) or a mount not up yet is right again a moment later.
      if (error instanceof DataFileError || error instanceof TlsConfigError)
        throw new CliError(`cannot start: ${error.message}`);
      // --data-dir names a dir this user cannot keep secrets in: the operator's to fix, exit 2.
      if (error instanceof PrivateDirError) {
        const foreign =
          error.code === 'DIR_NOT_OWNED' ? await foreignDirMessage(config.dataDir, DATA_DIR_LABEL) : null;
        throw new CliError(`cannot start: ${foreign ?? error.message}`, 2);
      }
      // One server per data dir: the operator stops the other one or gives this one its own dir.
      if (error instanceof DataDirLockedError)
        throw new CliError(
          `cannot start: ${error.message}: stop that server first, or give this one its own --data-dir`,
          2,
        );
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') {
        const metrics = config.metricsListen;
        const taken = error as NodeJS.ErrnoException & { port?: number };
        if (metrics && taken.port === metrics.port && metrics.port !== config.port)
          throw new CliError(
            `cannot start: --metrics-listen ${metrics.host}:${metrics.port} is already in use (choose another address)`,
          );
        // Most often this very server, started twice: another port would only meet its data-dir lock.
        const holder = await dataDirHolder(config.dataDir);
        if (holder !== undefined)
          throw new CliError(
            `cannot start: a server already runs on this data dir (pid ${holder ?? 'unknown'}), and ${config.host}:${config.port} is in use: it is probably that one; stop it first, or give this one its own --data-dir and --port`,
            2,
          );
        throw new CliError(
          `cannot start: ${config.host}:${config.port} is already in use (--port to choose another)`,
        );
      }
      const errno = error as NodeJS.ErrnoException;
      if ((code === 'EACCES' || code === 'EADDRNOTAVAIL') && errno.syscall === 'listen')
        throw new CliError(
          `cannot start: cannot listen on ${config.host}:${config.port} (${code}): ${code === 'EACCES' ? 'ports below 1024 need CAP_NET_BIND_SERVICE; use --port 1024 or above' : 'that address is not on this host; check --host'}`,
        );
      // --host a name the resolver does not know: a typo, or a name this host's DNS lacks (exit 2,
      // which the unit does not restart); one it could not ask about now (EAI_AGAIN) is exit 1.
      if ((code === 'ENOTFOUND' || code === 'EAI_AGAIN') && errno.syscall === 'getaddrinfo')
        throw new CliError(
          `cannot start: --host ${config.host} ${code === 'ENOTFOUND' ? 'is no name this host can resolve' : 'could not be resolved now (the resolver did not answer)'} (${code}): give an address (127.0.0.1, 0.0.0.0, ::) or a name of this host`,
          code === 'ENOTFOUND' ? 2 : 1,
        );
      // Another user's 0700 data dir cannot even be opened to check its owner: the same line as
      // for one this user can see into, and exit 2, which the unit does not restart.
      if (code === 'EACCES' || code === 'EPERM') {
        const foreign = await foreignDirMessage(config.dataDir, DATA_DIR_LABEL);
        if (foreign) throw new CliError(`cannot start: ${foreign}`, 2);
      }
      if (errno.code && errno.path)
        throw new CliError(
          `cannot start: ${errno.path}: ${errnoWords(errno.code)}; fix: ${errnoFix(errno.code)}`,
        );
      throw error;
    }
    // Before "listening" is said: a SIGTERM sent on reading it (a test, a supervisor) found the
    // default action still in place when this process was descheduled between the two, and ended
    // it uncleanly.
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      server.logger.info({ signal }, 'stopping');
      await server.close();
      process.exit(0);
    };
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
    // A replica started without the first one's admin.key has none here: say where to get one.
    const keyFile =
      server.adminKeyAccepted === false
        ? `admin key file: ${server.adminKeyFile}, which holds no current admin key of this deployment (see the warning)`
        : existsSync(server.adminKeyFile)
          ? `admin key file: ${server.adminKeyFile}`
          : config.databaseUrl
            ? `no admin key file here (${server.adminKeyFile}): the deployment's admin keys are in its database; copy the first replica's admin.key, or use any admin key with --admin-key-file`
            : `no admin key file here (${server.adminKeyFile}): use an admin key you keep with --admin-key-file, or, locked out, restart with --new-admin-key to write a new one`;
    const { databaseLocation } = await import('../store/postgres/location.js');
    const { urlOf } = await import('../http/endpoints.js');
    // Which store, said first: a replica started without its database URL looked like any server.
    const store = config.databaseUrl
      ? `PostgreSQL at ${databaseLocation(config.databaseUrl)} (a replica; data dir ${config.dataDir})`
      : `embedded, in ${config.dataDir}`;
    // With --public-url the URL shown is the one agents use; where it listens is said too.
    const bound = urlOf(config.tlsCertFile ? 'https' : 'http', config.host, server.port);
    const listens = bound === server.url ? '' : `; bound to ${bound}`;
    console.error(
      `connector-server store: ${store}\nconnector-server listening on ${server.url}; ${keyFile}${listens}`,
    );
  });
}

/** What a file-system error code means, for people. */
function errnoWords(code: string): string {
  const words: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    EISDIR: 'is a directory where a file belongs',
    ENOTDIR: 'a part of the path is not a directory',
    ENOSPC: 'no space left on the device',
    EMFILE: 'too many open files',
  };
  return `${words[code] ?? 'cannot use it'} (${code})`;
}

function errnoFix(code: string): string {
  if (code === 'ENOSPC') return 'free some space on the data dir’s file system';
  if (code === 'EMFILE') return 'raise the open-file limit (ulimit -n, LimitNOFILE=)';
  return 'check the data dir’s files, their owner and permissions, or choose another --data-dir';
}

/**
 * The pid of the server holding `dataDir`'s lock (null: it has not written its pid yet), or undefined
 * when no server holds it (or the dir cannot be locked at all: not made yet, not ours). Taken and
 * given back at once when free.
 */
async function dataDirHolder(dataDir: string): Promise<number | null | undefined> {
  const { lockDataDir, DataDirLockedError: Locked } = await import('../store/data-dir-lock.js');
  try {
    await (await lockDataDir(dataDir)).release();
    return undefined;
  } catch (error) {
    return error instanceof Locked ? error.holderPid : undefined;
  }
}
