import type { Command } from 'commander';
import { SERVE_FLAGS } from '../config.js';
import { withDataDirErrors } from './backup-commands.js';
import { CliError } from './cli-error.js';

interface ImportFlags {
  dataDir: string;
  databaseUrl?: string;
}

/**
 * `import --data-dir DIR [--database-url URL]`: moves a single server's state into an empty
 * PostgreSQL database for replicas. Progress on stderr, the one-line summary on stdout.
 */
export function registerImportCommand(program: Command, env: NodeJS.ProcessEnv): void {
  program
    .command('import')
    .description(
      'copy a stopped server’s data dir (records, audit log, signing keys) into an empty PostgreSQL database, to run replicas on it',
    )
    .requiredOption(
      '--data-dir <dir>',
      'the data dir of the stopped server (only read; refused while a server holds it)',
    )
    .option(
      '--database-url <url>',
      `the empty database, postgres://… (env ${SERVE_FLAGS.databaseUrl.env}; prefer it: argv is visible to other users)`,
    )
    .action(async (flags: ImportFlags) => {
      const { parseDatabaseUrl } = await import('../flag-values.js');
      const url = flags.databaseUrl ?? env[SERVE_FLAGS.databaseUrl.env];
      if (!url)
        throw new CliError(
          `name the database to import into: --database-url postgres://… or ${SERVE_FLAGS.databaseUrl.env}`,
          2,
        );
      try {
        parseDatabaseUrl(url);
      } catch (error) {
        const from = flags.databaseUrl !== undefined ? '--database-url' : SERVE_FLAGS.databaseUrl.env;
        throw new CliError(`${from}: ${(error as Error).message}`, 2);
      }
      const { importDataDir, ImportRefusedError } = await import('../backup/database-import.js');
      const { DatabaseStartError } = await import('../data-files.js');
      const { DataFileError } = await import('../store/data-file.js');
      const result = await withDataDirErrors(
        flags.dataDir,
        'stop the server first (the import reads a stopped server’s state)',
        () =>
          importDataDir({
            dataDir: flags.dataDir,
            databaseUrl: url,
            progress: (line) => console.error(line),
          }),
      ).catch((error) => {
        if (error instanceof ImportRefusedError) throw new CliError(error.message, 2);
        // A database no start could use as it is (another application's, a newer version's): the
        // operator's to fix, exit 2.
        if (error instanceof DatabaseStartError)
          throw new CliError(error.message, error.configuration ? 2 : 1);
        if (error instanceof DataFileError) throw new CliError(error.message);
        throw error;
      });
      const r = result.records;
      console.log(
        `imported ${flags.dataDir} into PostgreSQL at ${result.database}: ${r.groups} group(s), ` +
          `${r.provisioningKeys} provisioning key(s), ${r.connectors} connector(s), ${r.apiKeys} admin key(s), ` +
          `${result.auditEvents} audit event(s), ${result.signingKeys} signing key(s) sealed with ` +
          `${flags.dataDir}/secret.key: start every replica with --database-url and --secret-file set to a 0600 copy of it.`,
      );
    });
}
