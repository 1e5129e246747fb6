import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { makeTempDir, type Proc, removeTempDir, repoRoot, spawnProcess } from './processes.js';

/** Whether an `nginx` binary is on PATH (Debian: package nginx-light; .ci/run installs it). */
export function nginxAvailable(): boolean {
  return spawnSync('nginx', ['-v'], { stdio: 'ignore' }).status === 0;
}

/** The nginx.conf shown in docs/deploy.md under `heading`: the first ```nginx block after it. */
export function documentedNginxConfig(heading = '### Several replicas behind nginx'): string {
  const doc = readFileSync(join(repoRoot, 'docs/deploy.md'), 'utf8');
  const start = doc.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`docs/deploy.md has no section "${heading}"`);
  const block = /```nginx\n([\s\S]*?)```/.exec(doc.slice(start));
  if (!block) throw new Error(`docs/deploy.md "${heading}" has no nginx block`);
  return block[1] as string;
}

/**
 * `text` with each `[from, to]` replaced; every `from` must occur exactly once, so a doc that changed
 * under the test fails it instead of being run half-substituted.
 */
export function substituted(text: string, replacements: ReadonlyArray<readonly [string, string]>): string {
  let result = text;
  for (const [from, to] of replacements) {
    const count = result.split(from).length - 1;
    if (count !== 1) throw new Error(`expected "${from}" once in the nginx config, found it ${count} times`);
    result = result.replace(from, () => to);
  }
  return result;
}

export interface RunningNginx extends Proc {
  dir: string;
  /** The error log so far (where nginx tells why it closed or refused something). */
  errorLog(): string;
  close(): Promise<void>;
}

/**
 * A real nginx in the foreground on `config` (a whole nginx.conf), with everything it writes (pid,
 * error log, temp files) in a temp dir of its own and no access log. Resolves once `port` on
 * loopback accepts connections.
 */
export async function startNginx(config: string, port: number): Promise<RunningNginx> {
  const dir = makeTempDir('ce-nginx-');
  const errorLog = join(dir, 'error.log');
  // What a distribution's nginx.conf and paths would otherwise give: kept out of the documented part.
  const top = [
    `pid ${dir}/nginx.pid;`,
    `error_log ${errorLog} info;`,
    // As root, workers would switch to www-data, which cannot enter the 0700 temp dir.
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
  ];
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(
    (kind) => `    ${kind}_temp_path ${dir}/${kind};`,
  );
  const whole = substituted(config, [['\nhttp {\n', `\nhttp {\n    access_log off;\n${temps.join('\n')}\n`]]);
  await writeFile(join(dir, 'nginx.conf'), `${top.join('\n')}\n${whole}`);
  const proc = spawnProcess(
    'nginx',
    ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', errorLog, '-g', 'daemon off;'],
    {
      name: 'nginx',
    },
  );
  const readErrorLog = () => {
    try {
      return readFileSync(errorLog, 'utf8');
    } catch {
      return '';
    }
  };
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (proc.exit() || Date.now() > deadline) {
      await proc.stop('SIGKILL', 1000);
      removeTempDir(dir);
      throw new Error(`nginx did not start on port ${port}:\n${proc.output()}\n${readErrorLog()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    ...proc,
    dir,
    errorLog: readErrorLog,
    async close() {
      // SIGTERM: nginx's fast shutdown (SIGQUIT would wait for every websocket to end).
      await proc.stop('SIGTERM', 5000);
      removeTempDir(dir);
    },
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
