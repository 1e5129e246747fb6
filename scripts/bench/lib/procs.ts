import { type ChildProcess, fork, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Peer } from './ipc.js';

export const repoRoot = join(import.meta.dirname, '..', '..', '..');
export const benchDir = join(repoRoot, 'scripts', 'bench');

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** Kills every child's whole process group (each child leads its own) and removes the temp dirs. */
export function cleanupAll(): void {
  for (const child of children) killGroup(child, 'SIGKILL');
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** A temp dir that cleanupAll() removes. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function forgetTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

export interface Child {
  child: ChildProcess;
  peer: Peer;
  pid: number;
  logFile: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The last lines the child wrote (stdout and stderr go to its log file). */
  tail(lines?: number): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Forks a TypeScript script of the harness as its own process group, with an IPC channel; its output
 * goes to `logFile`. `nodeArgs` go to node itself (e.g. --expose-gc).
 */
export function forkTs(
  name: string,
  script: string,
  args: string[],
  options: { logFile: string; nodeArgs?: string[]; env?: NodeJS.ProcessEnv },
): Child {
  const fd = openSync(options.logFile, 'a');
  const child = fork(join(benchDir, script), args, {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx', ...(options.nodeArgs ?? [])],
    detached: true,
    stdio: ['ignore', fd, fd, 'ipc'],
    env: options.env ?? { ...process.env, NODE_ENV: 'production' },
  });
  closeSync(fd);
  return track(name, child, options.logFile);
}

/** Spawns a plain executable as its own process group, output to `logFile`. */
export function spawnLogged(
  name: string,
  command: string,
  args: string[],
  options: { logFile: string; env?: NodeJS.ProcessEnv; cwd?: string },
): Child {
  const fd = openSync(options.logFile, 'a');
  const child = spawn(command, args, {
    cwd: options.cwd ?? repoRoot,
    detached: true,
    stdio: ['ignore', fd, fd],
    env: options.env ?? process.env,
  });
  closeSync(fd);
  return track(name, child, options.logFile);
}

function track(name: string, child: ChildProcess, logFile: string): Child {
  children.add(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  if (child.pid === undefined) throw new Error(`${name}: could not start`);
  return {
    child,
    peer: new Peer(name, child),
    pid: child.pid,
    logFile,
    exited,
    tail: (lines = 20) => {
      try {
        return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '';
      }
    },
    kill: async (signal = 'SIGTERM') => {
      killGroup(child, signal);
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
