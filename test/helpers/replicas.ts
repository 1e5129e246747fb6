import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ManualClock } from '../../server/clock.js';
import type { ServerConfig } from '../../server/server-config.js';
import { startCommitCutter } from './commit-cutter.js';
import { freshDatabase } from './postgres.js';
import { type ServerProc, spawnServer } from './processes.js';
import { realTimeClock, startTestServer, type TestServer, tempDir } from './server.js';

/**
 * `count` real servers on one PostgreSQL database, as replicas of one deployment: each with its own
 * data dir (its lock, its bootstrap admin key) and the same `secret.key`, copied from the first, as
 * an operator does. Real time by default: the replicas' heartbeats compare their clocks.
 */
export async function startReplicas(
  databaseUrl: string,
  count: number,
  options: {
    config?: Partial<ServerConfig>;
    clock?: ManualClock;
    loggerOf?: (index: number) => Logger | undefined;
    /** A replica already running on the database: the new ones join it (its secret and admin key). */
    joining?: TestServer;
  } = {},
): Promise<TestServer[]> {
  const clock = options.clock ?? realTimeClock();
  const config = { databaseUrl, ...options.config };
  const logger = (index: number) => {
    const given = options.loggerOf?.(index);
    return given ? { logger: given } : {};
  };
  const joinedDir = async (from: TestServer) => {
    const dataDir = await tempDir();
    await copyFile(join(from.dataDir, 'secret.key'), join(dataDir, 'secret.key'));
    // The admin keys are in the database: the first replica's bootstrap key works on every one
    // (a replica writes a bootstrap key only when the database has no usable admin key).
    await copyFile(join(from.dataDir, 'admin.key'), join(dataDir, 'admin.key'));
    return dataDir;
  };
  const first = await startTestServer({
    clock,
    config,
    ...logger(0),
    ...(options.joining ? { dataDir: await joinedDir(options.joining) } : {}),
  });
  const replicas = [first];
  for (let i = 1; i < count; i++)
    replicas.push(await startTestServer({ clock, dataDir: await joinedDir(first), config, ...logger(i) }));
  return replicas;
}

export async function stopAll(replicas: readonly TestServer[]): Promise<void> {
  await Promise.allSettled(replicas.map((replica) => replica[Symbol.asyncDispose]()));
}

/**
 * `count` real server processes (`serve`, database URL in the environment) on one database: the
 * first alone, the others together once it is up, each with a data dir of its own holding copies of
 * the first one's `secret.key` and `admin.key`, as README "Run replicas" tells an operator.
 */
export async function spawnReplicas(databaseUrl: string, count: number): Promise<ServerProc[]> {
  const env = { CONNECTOR_DATABASE_URL: databaseUrl };
  const first = await spawnServer(await tempDir(), [], 0, { env, startTimeoutMs: REPLICA_START_MS });
  const others = Array.from({ length: count - 1 }, async () => {
    const dataDir = await tempDir();
    for (const file of ['secret.key', 'admin.key']) {
      await copyFile(join(first.dataDir, file), join(dataDir, file));
    }
    return spawnServer(dataDir, [], 0, { env, startTimeoutMs: REPLICA_START_MS });
  });
  const started = await Promise.allSettled(others);
  const replicas = [first, ...started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))];
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await Promise.allSettled(replicas.map((replica) => replica.stop('SIGKILL')));
    throw failed.reason;
  }
  return replicas;
}

/** A server process starts in ~2 s on an idle machine; several at once on a loaded two-core one take longer. */
export const REPLICA_START_MS = 60_000;

/**
 * A fresh database with two replicas: B on it directly, A through a commit cutter (so that A's
 * COMMITs are the ones a test cuts). What it starts is pushed onto `cleanups`, to be run in reverse.
 */
export async function replicasWithCutter(cleanups: Array<() => Promise<void>>) {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  const cutter = await startCommitCutter(db.url);
  cleanups.push(() => cutter.close());
  const [b] = await startReplicas(db.url, 1);
  const [a] = await startReplicas(cutter.url, 1, { joining: b! });
  cleanups.push(() => stopAll([a!, b!]));
  return { a: a!, b: b!, cutter };
}
