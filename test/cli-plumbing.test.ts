import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import pkg from '../package.json' with { type: 'json' };
import { repoRoot } from './helpers/processes.js';
import { startTestServer } from './helpers/server.js';

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
    const stray = await bin('connector-agent', ['--server', 'http://127.0.0.1:2', 'zzzz']);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toContain("error: unknown command 'zzzz'");
  });

  it('`help` and `help <command>` print the usage and exit 0, for the agent as for the server', async () => {
    const [agent, agentStatus, server] = await Promise.all([
      bin('connector-agent', ['help']),
      bin('connector-agent', ['help', 'unenroll']),
      bin('connector-server', ['help']),
    ]);
    expect(agent).toMatchObject({ code: 0, stderr: '' });
    expect(agent.stdout).toMatch(/^Usage: connector-agent \[options\] \[command\]/);
    expect(agent.stdout).toContain('Exit codes: 0 stopped by SIGINT');
    expect(agentStatus).toMatchObject({ code: 0, stderr: '' });
    expect(agentStatus.stdout).toMatch(/^Usage: connector-agent unenroll\|logout \[options\]/);
    // A default shown as the number it is, not a quoted string.
    expect(agentStatus.stdout).toContain('(default: 20)');
    expect(server).toMatchObject({ code: 0, stderr: '' });
    expect(server.stdout).toMatch(/^Usage: connector-server \[options\] \[command\]/);
    // A command there is not (the run has none): one line that says so, not the whole help.
    const [run, alias] = await Promise.all([
      bin('connector-agent', ['help', 'run']),
      bin('connector-agent', ['help', 'logout']),
    ]);
    expect(run.code).toBe(2);
    expect(run.stderr.trim()).toBe(
      'error: no command "run": the agent runs with no command (connector-agent --server URL …); its commands are status, unenroll, completion, version',
    );
    expect(alias).toMatchObject({ code: 0, stderr: '' });
  });

  it('completion bash: sourced in bash it registers itself, and completing COMP_WORDS offers the tree commander knows', async () => {
    const [server, agent] = await Promise.all([
      bin('connector-server', ['completion', 'bash']),
      bin('connector-agent', ['completion', 'bash']),
    ]);
    expect(server.code).toBe(0);
    expect(agent.code).toBe(0);
    const dir = await mkdtemp(join(tmpdir(), 'ce-completion-'));
    await writeFile(join(dir, 'server.bash'), server.stdout);
    await writeFile(join(dir, 'agent.bash'), agent.stdout);
    /** What the completion function offers for `words`, the last being the word under the cursor. */
    const complete = async (script: string, fn: string, words: string[]) => {
      const quoted = words.map((w) => `'${w}'`).join(' ');
      const result = await run('bash', [
        '-c',
        `source ${join(dir, script)}; COMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; ${fn}; printf '%s\n' "\${COMPREPLY[@]}"`,
      ]);
      expect(result.code, result.stderr).toBe(0);
      return result.stdout.split('\n').filter(Boolean);
    };
    const registered = await run('bash', [
      '-c',
      `source ${join(dir, 'server.bash')}; source ${join(dir, 'agent.bash')}; complete -p connector-server connector-agent`,
    ]);
    expect(registered.stdout).toContain('-F _connector_server connector-server');
    expect(registered.stdout).toContain('-F _connector_agent connector-agent');
    const s = (words: string[]) =>
      complete('server.bash', '_connector_server', ['connector-server', ...words]);
    const a = (words: string[]) => complete('agent.bash', '_connector_agent', ['connector-agent', ...words]);
    expect(await s(['gr'])).toEqual(['groups']);
    expect(await s(['groups', 'regen'])).toEqual(['regenerate-key']);
    expect(await s(['connectors', 'list', '--con'])).toEqual(['--connection']);
    // Options between commands do not lose the path.
    expect(await s(['--version', 'connectors', 're'])).toEqual(['revoke']);
    expect(await s(['serve', '--tls-'])).toEqual(['--tls-cert', '--tls-key']);
    expect(await a(['st'])).toEqual(['status']);
    expect(await a(['unenroll', '--fo'])).toEqual(['--force']);
    expect(await a(['logout', '--ev'])).toEqual(['--even-if-running']);
    expect(await a(['--key-'])).toEqual(['--key-file']);

    const zsh = await bin('connector-agent', ['completion', 'zsh']);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toMatch(/^#compdef connector-agent\nautoload -U \+X bashcompinit && bashcompinit\n/);
    const unknown = await bin('connector-agent', ['completion', 'fish']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('completion: unknown shell "fish" (bash or zsh)');
    await rm(dir, { recursive: true, force: true });
  });
});

/** Runs `main` with ARGS, its stdout's reader gone before it writes (as `| head -0` leaves it). */
function withStdoutClosed(main: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, main), ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

describe('CLI output read by a pipe that closes early (| head)', () => {
  it('the command that did its work exits 0 with nothing on stderr, not an EPIPE stack trace', async () => {
    await using srv = await startTestServer();
    const created = await withStdoutClosed('server/main.ts', [
      'groups',
      'create',
      'Piped',
      '--server',
      srv.url,
      '--admin-key-file',
      srv.server.adminKeyFile,
    ]);
    expect(created).toEqual({ code: 0, stderr: '' });
    expect((await srv.admin.groups.list.query({})).map((g) => g.name)).toEqual(['Piped']);
    expect(await withStdoutClosed('agent/main.ts', ['completion', 'bash'])).toEqual({ code: 0, stderr: '' });
  });
});
