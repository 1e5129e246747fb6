import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import { addCompletionCommand } from '../shared/cli-completion.js';
import { withOptionHint } from '../shared/cli-option-hints.js';
import {
  DEFAULT_ROOT_STATE_DIR,
  parseAgentConfig,
  readableStateDir,
  resolveStateDir,
  UsageError,
} from './config.js';
import { createLogger } from './log.js';
import { runAgent } from './run.js';
import { readStatusSummary, rootStateHint, STATUS_EXIT_CODES_HELP, statusLines } from './status-command.js';
import { UNENROLL_EXIT_CODES_HELP, type UnenrollFlags, unenroll } from './unenroll-command.js';
import { versionLine } from './version.js';

/** Options more than one command takes, worded once (a function: each command gets its own Option). */
const stateDirOption = () =>
  new Option(
    '--state-dir <dir>',
    'where the identity is kept (env CONNECTOR_STATE_DIR; default /var/lib/connector-agent as root, else $XDG_STATE_HOME/connector-agent or ~/.local/state/connector-agent)',
  );
const caFileOption = () =>
  new Option('--ca-file <file>', 'PEM CA to trust for the server certificate (env CONNECTOR_CA_FILE)');
const logJsonOption = () => new Option('--log-json', 'log JSON lines instead of text');

/**
 * The connector-agent command tree (the run command and its subcommands), built without parsing
 * argv: main.ts runs it, and the completion script and the reference doc's test walk it.
 */
export function buildAgentProgram(): Command {
  const program = new Command('connector-agent')
    .description(
      'Connector agent: enrolls this host once with a provisioning key, then stays connected to the enrollment server.',
    )
    .version(versionLine(), '--version', 'print the version, build time and commit')
    .option(
      '--server <url>',
      'enrollment server URL; repeat it or separate with commas for replicas, tried from a random one on (env CONNECTOR_SERVER)',
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option('--key <key>', 'provisioning key (prefer --key-file: argv is visible to other users)')
    .option('--key-file <file>', 'file holding the provisioning key')
    .addOption(stateDirOption())
    .option('--name <name>', "this connector's name at enrollment (default: the host name)")
    .addOption(caFileOption())
    .option('--allow-insecure', 'allow plain http:// to a host other than loopback')
    .option(
      '--allow-server-change',
      'present the saved identity to a --server other than those it was issued for, and save the new list once a session on one of them is ready',
    )
    .addOption(logJsonOption())
    .addHelpText(
      'after',
      `
  The key may also come from env CONNECTOR_PROVISIONING_KEY. Once enrolled, the saved identity is used
  and any key is ignored.

  Exit codes: 0 stopped by SIGINT/SIGTERM/SIGHUP · 1 unexpected failure · 2 usage error · 3 enrollment refused
  · 4 revoked (identity wiped) · 5 identity no longer valid: deleted, unknown or expired (identity wiped)
  · 6 identity in use elsewhere: another process with this identity replaced this session (identity kept).
  status and unenroll add 7 to 10 (see their --help); no number means two things.`,
    )
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ outputError: (text, write) => write(withOptionHint(text, program)) })
    // Commander adds `help [command]` only to a program without an action of its own; the run
    // command has one, so `connector-agent help` was an unknown command.
    .helpCommand(true)
    .exitOverride()
    // The run command takes no operands: a word left over is a mistyped subcommand (checked in the
    // action, so that it gets commander's "did you mean" instead of "too many arguments").
    .allowExcessArguments()
    // `status --state-dir X`: options after a subcommand belong to it, not to the run command.
    .enablePositionalOptions()
    .action(async (flags) => {
      if (program.args.length > 0) (program as Command & { unknownCommand(): never }).unknownCommand();
      const config = await parseAgentConfig(flags);
      const logger = createLogger(config.logFormat);
      const controller = new AbortController();
      // SIGHUP too: the terminal of an agent started by hand closing is a stop, said and clean.
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
        process.once(sig, () => {
          logger.info(`received ${sig}; stopping`);
          controller.abort();
        });
      }
      process.exit(await runAgent(config, logger, controller.signal));
    });

  program
    .command('status')
    .description("show this host's enrollment and whether its agent runs and is connected")
    .addOption(stateDirOption())
    .option('--json', 'print JSON')
    .addHelpText('after', `\n${STATUS_EXIT_CODES_HELP}`)
    .action(async (flags: { stateDir?: string; json?: boolean }) => {
      const summary = await readStatusSummary(await readableStateDir(resolveStateDir(flags.stateDir)));
      console.log(flags.json ? JSON.stringify(summary, null, 2) : statusLines(summary).join('\n'));
      const hint = rootStateHint(summary, {
        stateDirNamed: Boolean(flags.stateDir || process.env.CONNECTOR_STATE_DIR),
        uid: process.getuid?.(),
        rootDirExists: existsSync(DEFAULT_ROOT_STATE_DIR),
        rootDir: DEFAULT_ROOT_STATE_DIR,
      });
      if (hint) console.error(hint);
      process.exitCode = summary.exitCode;
    });

  program
    .command('unenroll')
    .alias('logout')
    .description(
      "delete this host's connector on the server (over its own identity) and wipe the identity here",
    )
    .addOption(stateDirOption())
    .addOption(caFileOption())
    .option(
      '--force',
      'wipe the identity here even if the server cannot be reached (it then still lists the connector)',
    )
    .option(
      '--even-if-running',
      'go ahead while the agent runs with this state dir: it is stopped first (SIGTERM, exit 0)',
    )
    .addOption(
      // The default's description unquoted: commander shows a string default as "20".
      new Option('--timeout <seconds>', 'how long to try to reach the server').default('20', '20'),
    )
    .addOption(logJsonOption())
    .addHelpText('after', `\n${UNENROLL_EXIT_CODES_HELP}`)
    .action(async (flags: UnenrollFlags & { logJson?: boolean }) => {
      // Exits once it has its answer: a server that took the connection but never answers would
      // otherwise hold it for the websocket's closing handshake (~30 s past --timeout).
      process.exit(await unenroll(flags, createLogger(flags.logJson ? 'json' : 'text')));
    });

  addCompletionCommand(program, (message) => new UsageError(message));

  program
    .command('version')
    .description('print the version, build time and commit')
    .action(() => {
      console.log(versionLine());
    });
  return program;
}
