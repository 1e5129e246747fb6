import { Command } from 'commander';
import pkg from '../../package.json' with { type: 'json' };
import { addCompletionCommand } from '../../shared/cli-completion.js';
import { withOptionHint } from '../../shared/cli-option-hints.js';
import { adminEnv } from './admin-common.js';
import { registerApiKeyCommands } from './api-key-commands.js';
import { registerAuditCommand } from './audit-command.js';
import { registerBackupCommands } from './backup-commands.js';
import { CliError } from './cli-error.js';
import { registerConnectorCommands } from './connector-commands.js';
import { registerGroupCommands } from './group-commands.js';
import { registerImportCommand } from './import-command.js';
import { registerReplicaCommands } from './replica-commands.js';
import { registerServeCommand } from './serve-command.js';
import { registerSigningKeyCommands } from './signing-key-commands.js';

/**
 * The connector-server command tree, built without parsing argv: main.ts runs it, and the completion
 * script and the reference doc's test walk it. `json`: usage errors as one JSON object (--json);
 * `env`: where the admin commands' defaults come from, read here once.
 */
export function buildServerProgram({
  json: wantsJson,
  env = process.env,
}: {
  json: boolean;
  env?: NodeJS.ProcessEnv;
}): Command {
  const admin = adminEnv(env);
  const program = new Command('connector-server')
    .description('Connector enrollment server: serve, and admin commands that call its API')
    .version(`connector-server ${pkg.version}`, '--version', 'print the version')
    .showHelpAfterError(wantsJson ? false : '(run with --help for usage)')
    .configureOutput({
      outputError: (raw, write) => {
        const text = withOptionHint(raw, program);
        write(
          wantsJson
            ? `${JSON.stringify({ error: { reason: 'USAGE', message: text.replace(/^error: /, '').trim(), fix: 'run with --help for usage', exitCode: 2 } })}\n`
            : text,
        );
      },
    })
    .exitOverride();

  registerServeCommand(program);
  registerGroupCommands(program, admin);
  registerConnectorCommands(program, admin);
  registerApiKeyCommands(program, admin);
  registerAuditCommand(program, admin);
  registerSigningKeyCommands(program, admin);
  registerReplicaCommands(program, admin);
  registerBackupCommands(program, admin);
  registerImportCommand(program, env);

  addCompletionCommand(program, (message) => new CliError(message, 2));
  return program;
}
