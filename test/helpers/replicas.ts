import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ManualClock } from '../../server/clock.js';
import type { ServerConfig } from '../../server/server-config.js';
import { realTimeClock, startTestServer, type TestServer, tempDir } from './server.js';

/**
 * `count` real servers on one PostgreSQL database, as replicas of one deployment: each with its own
 * data dir (its lock, its bootstrap admin key) and the same `secret.key`, copied from the first, as
 * an operator does. Real time by default: the replicas' heartbeats compare their clocks.
 */
export async function startReplicas(
  databaseUrl: string,
  count: number,
  options: { config?: Partial<ServerConfig>; clock?: ManualClock } = {},
): Promise<TestServer[]> {
  const clock = options.clock ?? realTimeClock();
  const config = { databaseUrl, ...options.config };
  const first = await startTestServer({ clock, config });
  const replicas = [first];
  for (let i = 1; i < count; i++) {
    const dataDir = await tempDir();
    await copyFile(join(first.dataDir, 'secret.key'), join(dataDir, 'secret.key'));
    // The admin keys are in the database: the first replica's bootstrap key works on every one
    // (a replica writes a bootstrap key only when the database has no usable admin key).
    await copyFile(join(first.dataDir, 'admin.key'), join(dataDir, 'admin.key'));
    replicas.push(await startTestServer({ clock, dataDir, config }));
  }
  return replicas;
}

export async function stopAll(replicas: readonly TestServer[]): Promise<void> {
  await Promise.allSettled(replicas.map((replica) => replica[Symbol.asyncDispose]()));
}
