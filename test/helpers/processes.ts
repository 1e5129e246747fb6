import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Proc, spawnTs } from '../../scripts/lib/processes.js';

// The one process-helper module (shared with the demo and the bench); tests import it from here.
export {
  freePort,
  makeTempDir,
  type Proc,
  removeTempDir,
  repoRoot,
  settleWithin,
  spawnProcess,
  spawnTs,
} from '../../scripts/lib/processes.js';

export interface ServerProc extends Proc {
  url: string;
  port: number;
  /** The bootstrap admin key it wrote; '' when it wrote none (a replica whose database had one). */
  adminKey: string;
  dataDir: string;
}

/**
 * The real server CLI (`serve`) as a child process, on `port` or (by default) one the OS picks.
 * `env` is added to this process's environment (e.g. CONNECTOR_DATABASE_URL, kept out of argv).
 */
export async function spawnServer(
  dataDir: string,
  extraArgs: string[] = [],
  port = 0,
  options: { env?: NodeJS.ProcessEnv; startTimeoutMs?: number } = {},
): Promise<ServerProc> {
  const args = ['serve', '--data-dir', dataDir, '--port', String(port), '--log-level', 'warn', ...extraArgs];
  const proc = spawnTs('server/main.ts', args, { env: { ...process.env, ...options.env } });
  const [, url] = await proc.waitForOutput(/listening on (\S+?);/, options.startTimeoutMs);
  const adminKey = (await readFile(join(dataDir, 'admin.key'), 'utf8').catch(() => '')).trim();
  return { ...proc, url: url!, port: Number(new URL(url!).port), adminKey, dataDir };
}
