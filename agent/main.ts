import { CommanderError } from 'commander';
import { exitQuietlyWhenStdoutCloses } from '../shared/closed-stdout.js';
import { UsageError } from './config.js';
import { EXIT } from './exit-codes.js';
import { keepRunningWhenStderrCloses } from './log.js';
import { buildAgentProgram } from './program.js';

const program = buildAgentProgram();
exitQuietlyWhenStdoutCloses();
keepRunningWhenStderrCloses();

// No top-level await: the single executable's bundle is CommonJS.
async function main(): Promise<void> {
  try {
    // `help <name>` for a command there is not printed the whole help and stopped, without saying why.
    const [first, asked] = process.argv.slice(2);
    if (
      first === 'help' &&
      asked &&
      !asked.startsWith('-') &&
      !program.commands.some((c) => c.name() === asked || c.aliases().includes(asked))
    )
      throw new UsageError(
        `no command "${asked}": the agent runs with no command (connector-agent --server URL …); its commands are ${program.commands.map((c) => c.name()).join(', ')}`,
      );
    await program.parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? EXIT.STOPPED : EXIT.USAGE);
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}`);
      process.exit(EXIT.USAGE);
    }
    console.error(`error: ${(error as Error)?.stack ?? error}`);
    process.exit(EXIT.FAILED);
  }
}
void main();
