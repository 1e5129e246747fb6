#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import pkg from '../package.json' with { type: 'json' };
import { COMPLETION_SHELLS, completionScript, isCompletionShell } from '../shared/cli-completion.js';
import { CliError, registerAdminCommands } from './cli/admin-commands.js';
import { registerSigningKeyCommands } from './cli/signing-key-commands.js';
import { SERVE_FLAGS, type ServeFlagValues } from './config.js';

const program = new Command('connector-server')
  .description('Connector enrollment server: serve, and admin commands that call its API')
  .version(`connector-server ${pkg.version}`, '--version', 'print the version')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

const serve = program
  .command('serve')
  .description(
    'run the enrollment server (HTTP API, websockets, /healthz, /metrics, /.well-known/jwks.json)',
  );
for (const spec of Object.values(SERVE_FLAGS)) {
  serve.addOption(
    new Option(spec.flag, `${spec.help} [env ${spec.env}${spec.default ? `, default ${spec.default}` : ''}]`),
  );
}
serve.action(async (flags: ServeFlagValues) => {
  const { parseServeConfig } = await import('./config.js');
  const { startServer, TlsConfigError } = await import('./app.js');
  const { DataFileError } = await import('./store/lowdb-store.js');
  const { PrivateDirError } = await import('../shared/private-files.js');
  let config: ReturnType<typeof parseServeConfig>;
  try {
    config = parseServeConfig(flags);
  } catch (error) {
    throw new CliError((error as Error).message, 2);
  }
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    server = await startServer(config);
  } catch (error) {
    if (error instanceof DataFileError || error instanceof TlsConfigError)
      throw new CliError(`cannot start: ${error.message}`);
    // --data-dir names a dir this user cannot keep secrets in: the operator's to fix, exit 2.
    if (error instanceof PrivateDirError) throw new CliError(`cannot start: ${error.message}`, 2);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE')
      throw new CliError(
        `cannot start: ${config.host}:${config.port} is already in use (--port to choose another)`,
      );
    if (code === 'EACCES' || code === 'EROFS')
      throw new CliError(`cannot start: ${(error as Error).message}`);
    throw error;
  }
  console.error(`connector-server listening on ${server.url}; admin key file: ${server.adminKeyFile}`);
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
});

registerAdminCommands(program);
registerSigningKeyCommands(program);

program
  .command('completion')
  .description('print a shell completion script: eval "$(connector-server completion bash)"')
  .argument('<shell>', COMPLETION_SHELLS.join(' or '))
  .action((shell: string) => {
    if (!isCompletionShell(shell))
      throw new CliError(`completion: unknown shell "${shell}" (${COMPLETION_SHELLS.join(' or ')})`, 2);
    process.stdout.write(completionScript(program, shell));
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exit(error.exitCode === 0 ? 0 : 2);
  }
  if (error instanceof CliError) {
    console.error(`error: ${error.message}`);
    process.exit(error.exitCode);
  }
  console.error(`error: ${(error as Error)?.stack ?? error}`);
  process.exit(1);
}
