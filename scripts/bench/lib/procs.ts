import { join } from 'node:path';
import { type Proc, repoRoot, spawnTs } from '../../lib/processes.js';
import { Peer } from './ipc.js';

export const benchDir = join(repoRoot, 'scripts', 'bench');

/** One of the harness's own processes (a server or a client under test) and the IPC peer that drives it. */
export interface Child extends Proc {
  peer: Peer;
}

/**
 * Starts a script of the harness (server-proc.ts, client-proc.ts) with an IPC channel, its output to
 * `logFile`; `nodeArgs` go to node itself (e.g. --expose-gc).
 */
export function forkTs(
  name: string,
  script: string,
  args: string[],
  options: { logFile: string; nodeArgs?: string[]; env?: NodeJS.ProcessEnv },
): Child {
  const proc = spawnTs(join('scripts', 'bench', script), args, {
    name,
    ipc: true,
    logFile: options.logFile,
    nodeArgs: options.nodeArgs,
    env: options.env ?? { ...process.env, NODE_ENV: 'production' },
  });
  return { ...proc, peer: new Peer(name, proc.child) };
}
