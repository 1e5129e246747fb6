import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/processes.js';

/** The demo may have to build the single executable first (about 10 s, longer on a busy machine). */
const DEMO_TIMEOUT_MS = 170_000;

interface DemoRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/**
 * Runs `npm run -s demo` as a user would, with no terminal, in its own process group (so a timeout,
 * or a Ctrl-C as a terminal sends it, reaches npm, tsx and the demo together). `interruptWhen`: send
 * SIGINT to the group once the output matches.
 */
async function runDemo(interruptWhen?: RegExp): Promise<DemoRun> {
  const child = spawn('npm', ['run', '-s', 'demo'], {
    cwd: repoRoot,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const group = child.pid!;
  let output = '';
  let interrupted = false;
  const onData = (d: Buffer) => {
    output += d.toString();
    if (interruptWhen && !interrupted && interruptWhen.test(output)) {
      interrupted = true;
      process.kill(-group, 'SIGINT');
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const timer = setTimeout(() => process.kill(-group, 'SIGTERM'), DEMO_TIMEOUT_MS);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (resolve) => child.on('close', (c, s) => resolve({ code: c, signal: s })),
  );
  clearTimeout(timer);
  return { code, signal, output };
}

/** The demo's last words: what it started and created, all of which must be gone now. */
function expectNothingLeft(output: string) {
  const cleaned = output.match(/^cleaned up: pids ([\d ]+); dirs (.+)$/m);
  expect(cleaned, output).not.toBeNull();
  const pids = cleaned![1]!.trim().split(/\s+/).map(Number);
  const dirs = cleaned![2]!.trim().split(/\s+/);
  expect(pids.filter(isAlive), 'processes left running').toEqual([]);
  for (const dir of dirs) {
    expect(dir.startsWith(tmpdir()), `${dir} is a temp folder`).toBe(true);
    expect(existsSync(dir), `${dir} was removed`).toBe(false);
  }
  return { pids, dirs };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

describe('npm run demo', () => {
  it(
    'tells the whole story, exits 0 and leaves no process or folder behind',
    async () => {
      const { code, signal, output } = await runDemo();
      expect({ code, signal }, output).toEqual({ code: 0, signal: null });

      // The story's key moments, each checked by the demo itself (✓).
      expect(output).toMatch(/✓ connected: demo-agent-1 and demo-agent-2/);
      expect(output).toMatch(/✓ demo-agent-3 exited with code 3 \(enrollment refused\): KEY_SUPERSEDED/);
      expect(output).toMatch(/✓ a direct agent\.enroll call with the old key: HTTP 4\d\d, KEY_SUPERSEDED/);
      expect(output).toMatch(/✓ demo-agent-1 exited with code 4 \(revoked\)/);
      expect(output).toMatch(/✓ the group key changed: pk_\w+ → pk_\w+/);
      expect(output).toMatch(/✓ demo-agent-2 still connected/);
      // Nothing the demo checked failed (the build's own output, '│'-prefixed, may retry after a ✗).
      const narration = output.split('\n').filter((l) => !/^\s*│/.test(l));
      expect(narration.filter((l) => l.includes('✗'))).toEqual([]);
      expect(output).toMatch(/^demo OK: all 9 steps behaved/m);
      // No terminal, so no colour.
      expect(output).not.toMatch(/\x1b\[/);

      const { pids } = expectNothingLeft(output);
      // The server, two CLI calls, three agents at least.
      expect(pids.length).toBeGreaterThanOrEqual(6);
    },
    DEMO_TIMEOUT_MS + 10_000,
  );

  it(
    'on Ctrl-C cleans up every process and folder, then stops (130)',
    async () => {
      // Interrupt with both agents running: the most there is to clean up.
      const { code, signal, output } = await runDemo(/\[5\/9\]/);
      // The demo exits 130; npm, hit by the same SIGINT, may report it as its own death by the signal.
      expect(code === 130 || signal === 'SIGINT', `code ${code}, signal ${signal}\n${output}`).toBe(true);
      expect(output).toMatch(/SIGINT: stopping, cleaning up first/);
      expect(output).toMatch(/^demo FAILED .*interrupted by SIGINT/m);
      const { pids } = expectNothingLeft(output);
      expect(pids.length).toBeGreaterThanOrEqual(3);
    },
    DEMO_TIMEOUT_MS + 10_000,
  );
});
