#!/usr/bin/env node
import { CommanderError } from 'commander';
import { exitQuietlyWhenStdoutCloses } from '../shared/closed-stdout.js';
import { CliError } from './cli/cli-error.js';
import { buildServerProgram } from './cli/program.js';

/** With --json, errors go to stderr as one JSON object too, so a script reads one format. */
const wantsJson = process.argv.includes('--json');

const program = buildServerProgram({ json: wantsJson });
exitQuietlyWhenStdoutCloses();
// Node prints a library's warning over many lines of advice for its API's users (pg's on sslmode,
// a dozen lines before a start's one-line error): one line, its first, for an operator.
process.removeAllListeners('warning');
process.on('warning', (warning) => console.error(`warning: ${warning.message.split('\n')[0]}`));

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exit(error.exitCode === 0 ? 0 : 2);
  }
  if (error instanceof CliError) {
    if (wantsJson) {
      const [message, ...rest] = error.message.split('\n  fix: ');
      console.error(
        JSON.stringify({
          error: { reason: error.reason, message, fix: rest.join('') || null, exitCode: error.exitCode },
        }),
      );
    } else console.error(`error: ${error.message}`);
    process.exit(error.exitCode);
  }
  // Never a stack trace for a user: one line, and the stack only when asked for.
  if (process.env.CONNECTOR_DEBUG) console.error((error as Error)?.stack ?? error);
  console.error(
    `error: ${(error as Error)?.message ?? error} (unexpected: set CONNECTOR_DEBUG=1 for the stack trace, and please report it)`,
  );
  process.exit(1);
}
