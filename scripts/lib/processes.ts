/**
 * Child processes for the demo, the tests and the benchmark: one way to start them, wait for what
 * they print and stop them. It lives under scripts/ because the demo and the bench are scripts and
 * the tests may import scripts (never the other way round); the product never imports it.
 *
 * Every process starts as the leader of its own process group, so a signal reaches whatever it
 * started too. Nothing outlives us: when this process exits, every group still running gets SIGKILL
 * and every temp dir made here goes; the node processes spawnTs starts also end themselves if we
 * die without exiting (SIGKILL, a test runner's worker torn down), see exit-with-parent.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const repoRoot = join(import.meta.dirname, '..', '..');

const EXIT_WITH_PARENT = pathToFileURL(join(import.meta.dirname, 'exit-with-parent.ts')).href;
/** How often a process writing to a log file is checked by waitForOutput. */
const LOG_POLL_MS = 50;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** @default repoRoot */
  cwd?: string;
  /** Shown in errors. @default the command's (or entry's) file name */
  name?: string;
  /** Append stdout and stderr to this file instead of keeping them in memory (long, chatty runs). */
  logFile?: string;
  /** Open an IPC channel to it (the bench harness talks to its processes over one). */
  ipc?: boolean;
  /** Run it as this user (PostgreSQL refuses to run as root). @default this process's user */
  user?: { uid: number; gid: number };
}

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves once it has exited and its output streams are closed. */
  readonly exited: Promise<Exit>;
  /** How it exited; null while it runs. */
  exit(): Exit | null;
  /** Everything it printed so far, stdout and stderr as they came (read back from its log file if it has one). */
  output(): string;
  /** Its stdout alone ('' when it writes to a log file). */
  stdout(): string;
  /** Its stderr alone ('' when it writes to a log file). */
  stderr(): string;
  /** The last `count` lines of its output. */
  tail(count?: number): string;
  /** The first match of `pattern` in its output; rejects, with the output, if it exits first or `timeoutMs` passes. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends `signal` to its whole process group. */
  kill(signal?: NodeJS.Signals): void;
  /** Sends `signal` to its group, SIGKILL after `graceMs`; resolves once it is gone, throws if even SIGKILL did not end it. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

const running = new Set<Proc>();
const tempDirs = new Set<string>();

/** Kills every process group started here (SIGKILL) and removes every temp dir made here. */
export function cleanUpNow(): void {
  for (const proc of running) proc.kill('SIGKILL');
  running.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}
process.on('exit', cleanUpNow);

/** A fresh temp dir (mkdtemp: mode 0700) that goes when this process exits, if not removed before. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/**
 * Runs a TypeScript entry point of the repo (e.g. 'server/main.ts') as its own node process, with no
 * npm or tsx wrapper in between (so its pid is the program's, and signals reach it directly).
 * `nodeArgs` go to node itself (e.g. --expose-gc).
 */
export function spawnTs(
  entry: string,
  args: string[],
  options: SpawnOptions & { nodeArgs?: string[] } = {},
): Proc {
  const { nodeArgs = [], ...rest } = options;
  const node = ['--import', 'tsx', '--import', EXIT_WITH_PARENT, ...nodeArgs];
  return spawnProcess(process.execPath, [...node, join(repoRoot, entry), ...args], {
    name: basename(entry),
    ...rest,
  });
}

/** Runs any executable as the leader of its own process group. */
export function spawnProcess(command: string, args: string[], options: SpawnOptions = {}): Proc {
  const name = options.name ?? basename(command);
  const logFd = options.logFile === undefined ? null : openSync(options.logFile, 'a');
  const output = logFd === null ? 'pipe' : logFd;
  const child = spawn(command, args, {
    cwd: options.cwd ?? repoRoot,
    env: options.env ?? process.env,
    stdio: options.ipc ? ['ignore', output, output, 'ipc'] : ['ignore', output, output],
    detached: true,
    ...options.user,
  });
  if (logFd !== null) closeSync(logFd);
  if (child.pid === undefined) {
    // spawn reports why (ENOENT, EACCES) on 'error' only; the pid is all we can check synchronously.
    child.on('error', () => {});
    throw new Error(`${name}: could not start ${command}`);
  }

  let combined = '';
  const separate = { stdout: '', stderr: '' };
  const changed = new Set<() => void>();
  const notify = () => {
    for (const listener of [...changed]) listener();
  };
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]?.on('data', (data: Buffer) => {
      const text = data.toString();
      combined += text;
      separate[stream] += text;
      notify();
    });
  }
  const readOutput = () => {
    if (options.logFile === undefined) return combined;
    try {
      return readFileSync(options.logFile, 'utf8');
    } catch {
      return '';
    }
  };

  let exit: Exit | null = null;
  const exited = new Promise<Exit>((resolve) => {
    child.once('close', (code, signal) => {
      exit = { code, signal };
      running.delete(proc);
      notify();
      resolve(exit);
    });
  });

  const proc: Proc = {
    name,
    child,
    pid: child.pid,
    exited,
    exit: () => exit,
    output: readOutput,
    stdout: () => separate.stdout,
    stderr: () => separate.stderr,
    tail: (count = 20) => readOutput().trimEnd().split('\n').slice(-count).join('\n'),
    waitForOutput: (pattern, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const finish = (settle: () => void) => {
          changed.delete(check);
          clearTimeout(timer);
          clearInterval(poller);
          settle();
        };
        const check = () => {
          const text = readOutput();
          const match = text.match(pattern);
          if (match) finish(() => resolve(match));
          else if (exit)
            finish(() =>
              reject(
                new Error(`${name} exited (${describeExit(exit!)}) before printing ${pattern}:\n${text}`),
              ),
            );
        };
        const timer = setTimeout(
          () =>
            finish(() =>
              reject(new Error(`${name}: no ${pattern} within ${timeoutMs} ms:\n${readOutput()}`)),
            ),
          timeoutMs,
        );
        const poller = options.logFile === undefined ? undefined : setInterval(check, LOG_POLL_MS);
        changed.add(check);
        check();
      }),
    kill: (signal = 'SIGTERM') => {
      if (exit) return;
      try {
        process.kill(-proc.pid, signal);
      } catch {
        // The group is gone already (ESRCH): the leader exited and took nothing with it.
      }
    },
    stop: async (signal = 'SIGTERM', graceMs = 5_000) => {
      proc.kill(signal);
      let ended = await settleWithin(exited, graceMs);
      if (!ended) {
        proc.kill('SIGKILL');
        ended = await settleWithin(exited, graceMs);
      }
      if (!ended) throw new Error(`${name} (pid ${proc.pid}) did not exit even after SIGKILL`);
      return ended;
    },
  };
  running.add(proc);
  return proc;
}

/** "code 3" or "signal SIGTERM". */
export function describeExit(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

/** `promise`'s value, or null if it has not settled within `ms`; the timer never holds the process open. */
export async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A port free on 127.0.0.1 right now (another process may take it before you listen: prefer port 0). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
