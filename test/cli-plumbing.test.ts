import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import pkg from '../package.json' with { type: 'json' };
import { repoRoot } from './helpers/processes.js';

const execFileAsync = promisify(execFile);

/** Runs a command in the repository and returns its exit code and output, never throwing on exit codes. */
async function run(command: string, args: string[]) {
  try {
    const { stdout, stderr } = await execFileAsync(command, args, { cwd: repoRoot, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

type Bin = 'connector-server' | 'connector-agent';
/** `npx connector-server …` / `npx connector-agent …`, as the README has users run them: through the bin entries. */
const npx = (bin: Bin, args: string[]) => run('npx', ['--no-install', bin, ...args]);
/** The same bin script without npx's start-up (seconds on a busy machine). */
const bin = (name: Bin, args: string[]) => run(process.execPath, [`bin/${name}.mjs`, ...args]);

describe('CLI plumbing: bin entries, --version, suggestions', () => {
  it('npx connector-server --version and npx connector-agent --version print the package version and exit 0', async () => {
    const [server, agent] = await Promise.all([
      npx('connector-server', ['--version']),
      npx('connector-agent', ['--version']),
    ]);
    expect(server).toMatchObject({ code: 0, stdout: `connector-server ${pkg.version}\n` });
    expect(agent.code).toBe(0);
    expect(agent.stdout).toMatch(
      new RegExp(
        `^connector-agent ${pkg.version.replaceAll('.', '\\.')} \\(built source, commit source, node `,
      ),
    );
  });

  it('an unknown agent subcommand gets "did you mean", exit 2, as the server does', async () => {
    const [agent, server] = await Promise.all([
      bin('connector-agent', ['staus']),
      bin('connector-server', ['grops']),
    ]);
    expect(agent.code).toBe(2);
    expect(agent.stderr).toContain("error: unknown command 'staus'\n(Did you mean status?)");
    expect(server.code).toBe(2);
    expect(server.stderr).toContain("error: unknown command 'grops'\n(Did you mean groups?)");
    // A word nothing resembles is still refused, not taken as the run command with an extra word.
    const stray = await bin('connector-agent', ['--server', 'http://127.0.0.1:9', 'zzzz']);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toContain("error: unknown command 'zzzz'");
  });
});
