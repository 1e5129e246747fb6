import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { createAdminClient } from '../../server/admin-client.js';
import { type RunningServer, startServer } from '../../server/app.js';
import { ManualClock } from '../../server/clock.js';
import { defaultConfig, type ServerConfig } from '../../server/server-config.js';

export interface TestServer {
  server: RunningServer;
  url: string;
  adminKey: string;
  admin: ReturnType<typeof createAdminClient>;
  clock: ManualClock;
  dataDir: string;
  /** Stops the server (keeps the data dir). */
  stop(): Promise<void>;
  /** Stops the server and removes the data dir. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * A server clock that follows real time, for tests with real agents (which time their renewals
 * and sign their proofs by the real clock) and seconds-long lifetimes or spreads.
 */
export function realTimeClock(): ManualClock {
  const clock = new ManualClock();
  clock.now = () => Date.now();
  return clock;
}

export async function tempDir(prefix = 'ce-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A real server on 127.0.0.1, port 0, real files in a temp dir, a clock the test moves. */
export async function startTestServer(
  options: { clock?: ManualClock; dataDir?: string; config?: Partial<ServerConfig>; logger?: Logger } = {},
): Promise<TestServer> {
  const clock = options.clock ?? new ManualClock(Date.now());
  const dataDir = options.dataDir ?? (await tempDir());
  const server = await startServer(
    defaultConfig({ dataDir, host: '127.0.0.1', port: 0, ...options.config }),
    {
      clock,
      logger: options.logger ?? pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    },
  );
  const adminKey = (await readFile(server.adminKeyFile, 'utf8')).trim();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.close();
  };
  return {
    server,
    url: server.url,
    adminKey,
    admin: createAdminClient({ url: server.url, adminKey }),
    clock,
    dataDir,
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Calls a procedure over plain HTTP as curl would, returning status, reason and data. */
// biome-ignore lint/suspicious/noExplicitAny: raw JSON off the wire, as a curl user sees it
type Json = any;

export async function rawCall(
  url: string,
  path: string,
  input: unknown,
  options: { key?: string; method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; ok: boolean; reason?: string; data?: Json; error?: Json }> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...options.headers };
  if (options.key) headers.authorization = `Bearer ${options.key}`;
  const isQuery = options.method ? options.method === 'GET' : /\.(list|get|counts|nextSteps)$/.test(path);
  const res = isQuery
    ? await fetch(`${url}/trpc/${path}?input=${encodeURIComponent(JSON.stringify(input ?? {}))}`, { headers })
    : await fetch(`${url}/trpc/${path}`, {
        method: 'POST',
        headers,
        body: options.body ?? JSON.stringify(input ?? {}),
      });
  const text = await res.text();
  let body: Json;
  try {
    body = JSON.parse(text);
  } catch {
    body = { raw: text };
  }
  if (body?.error)
    return { status: res.status, ok: false, reason: body.error?.data?.reason, error: body.error };
  return { status: res.status, ok: true, data: body?.result?.data };
}
