/** What every build step uses: its error, running tools, finding them, and showing paths and sizes. */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A build failure the CLI prints as one explained line (no stack): exit 1. */
export class BuildAgentError extends Error {
  override name = 'BuildAgentError';
}

export type Log = (line: string) => void;
/** How a step reports: progress lines, and with `verbose` the output of the tools it runs. */
export interface StepIo {
  verbose: boolean;
  log: Log;
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(
  command: string,
  args: string[],
  options: { cwd?: string; timeoutMs?: number } = {},
): RunResult {
  const result: SpawnSyncReturns<string> = spawnSync(command, args, {
    cwd: options.cwd,
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 5 * 60_000,
    maxBuffer: 64 * 1024 * 1024,
    // npm is npm.cmd on Windows, which node only spawns through a shell.
    shell: process.platform === 'win32' && command.endsWith('.cmd'),
  });
  if (result.error) {
    return {
      status: null,
      stdout: result.stdout ?? '',
      stderr: `${result.stderr ?? ''}${result.error.message}`,
    };
  }
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Runs a tool that must succeed: its last 20 lines of output explain a failure; --verbose shows all. */
export function runChecked(command: string, args: string[], io: StepIo & { cwd?: string }): RunResult {
  const result = run(command, args, { cwd: io.cwd });
  const output = `${result.stdout}${result.stderr}`.trim();
  if (result.status !== 0) {
    const shown = output.split('\n').slice(-20).join('\n');
    throw new BuildAgentError(
      `${path.basename(command)} ${args.map((a) => display(a)).join(' ')} failed (exit ${result.status}):\n${shown}`,
    );
  }
  if (io.verbose && output) for (const line of output.split('\n')) io.log(`      | ${line}`);
  return result;
}

export function npmCommand(): string {
  return process.platform === 'win32' ? 'npm.cmd' : 'npm';
}

export function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function fileSize(file: string): number {
  return fs.statSync(file).size;
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function kib(bytes: number): string {
  return `${Math.round(bytes / 1024)} KiB`;
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Paths inside the repo are shown relative to it; others as they are. */
export function display(value: string): string {
  if (!path.isAbsolute(value)) return value;
  const relative = path.relative(REPO_ROOT, value);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : value;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
