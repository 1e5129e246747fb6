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
  spawnProcess,
  spawnTs,
} from '../../scripts/lib/processes.js';

export interface ServerProc extends Proc {
  url: string;
  port: number;
  adminKey: string;
}

/** The real server CLI (`serve`) as a child process, on `port` or (by default) one the OS picks. */
export async function spawnServer(dataDir: string, extraArgs: string[] = [], port = 0): Promise<ServerProc> {
  const args = ['serve', '--data-dir', dataDir, '--port', String(port), '--log-level', 'warn', ...extraArgs];
  const proc = spawnTs('server/main.ts', args);
  const [, url] = await proc.waitForOutput(/listening on (\S+?);/);
  const adminKey = (await readFile(join(dataDir, 'admin.key'), 'utf8')).trim();
  return { ...proc, url: url!, port: Number(new URL(url!).port), adminKey };
}
