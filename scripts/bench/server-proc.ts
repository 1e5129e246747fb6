/**
 * One server under test, in its own process: the project (`startServer` from server/app.ts, real
 * files, durability on) or a baseline. It answers the harness over IPC with its own RSS, heap, CPU
 * and event-loop delay, so the numbers are the server's alone.
 *
 *   node --import tsx --expose-gc scripts/bench/server-proc.ts --mode project|bare|trpc --port N [--data-dir D] [--identity-ttl-ms T]
 *
 * A project server is a replica on PostgreSQL when BENCH_DATABASE_URL is set (in the environment,
 * not argv: the URL holds a password).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { writeHeapSnapshot } from 'node:v8';
import { startServer } from '../../server/app.js';
import { defaultConfig } from '../../server/server-config.js';
import { DEFAULT_RATE_LIMITS } from '../../server/services/rate-limit.js';
import { cpuProfilerHandlers } from './lib/cpu-profiler.js';
import { serveIpc } from './lib/ipc.js';
import type { FleetKind, ServerReady, ServerStats } from './protocol.js';
import { startBareServer } from './servers/bare.js';
import { startMinTrpcServer } from './servers/trpc-min.js';

const { values } = parseArgs({
  options: {
    mode: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'data-dir': { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
    /** The project's identity lifetime (the renewal scenario makes it short). */
    'identity-ttl-ms': { type: 'string' },
  },
});
const mode = values.mode as FleetKind;
if (!['project', 'bare', 'trpc'].includes(mode)) throw new TypeError('--mode project|bare|trpc');

const eld = monitorEventLoopDelay({ resolution: 10 });
eld.enable();

interface Running {
  url: string;
  port: number;
  adminKeyFile: string | null;
  sessions(): number;
  storeStats(): ServerStats['store'];
  setPayload(body: string): void;
  close(): Promise<void>;
}

async function start(): Promise<Running> {
  const port = Number(values.port);
  if (mode === 'project') {
    if (!values['data-dir']) throw new TypeError('--data-dir is required in project mode');
    const server = await startServer(
      defaultConfig({
        dataDir: values['data-dir'],
        host: values.host,
        port,
        logLevel: values['log-level'],
        databaseUrl: process.env.BENCH_DATABASE_URL || null,
        ...(values['identity-ttl-ms'] ? { identityTtlMs: Number(values['identity-ttl-ms']) } : {}),
        // Every simulated agent comes from a handful of loopback addresses: lift the per-address
        // enrollment limit, as `serve --enroll-rate-per-minute` does.
        rateLimits: { ...DEFAULT_RATE_LIMITS, enrollPerAddressPerMinute: 1_000_000 },
      }),
    );
    // Diagnostics only: the store's group-commit counters are not part of the server's API.
    const store = (
      server.services.connectors as unknown as { deps: { store: { stats?: ServerStats['store'] } } }
    ).deps.store;
    return {
      url: server.url,
      port: server.port,
      adminKeyFile: server.adminKeyFile,
      sessions: () => server.hub.size,
      storeStats: () => (store.stats ? { ...store.stats } : null),
      setPayload: () => {},
      close: () => server.close(),
    };
  }
  const server =
    mode === 'bare' ? await startBareServer(values.host, port) : await startMinTrpcServer(values.host, port);
  return { ...server, adminKeyFile: null, storeStats: () => null };
}

function peakRssBytes(): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
}

const running = await start();

serveIpc({
  stats: (): ServerStats => {
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    return {
      pid: process.pid,
      uptimeMs: performance.now(),
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      heapTotalBytes: mem.heapTotal,
      externalBytes: mem.external,
      peakRssBytes: peakRssBytes(),
      cpuMs: (cpu.user + cpu.system) / 1000,
      cpuSystemMs: cpu.system / 1000,
      eld: {
        maxMs: eld.max / 1e6,
        p99Ms: eld.percentile(99) / 1e6,
        meanMs: Number.isNaN(eld.mean) ? 0 : eld.mean / 1e6,
      },
      openFds: openFds(),
      sessions: running.sessions(),
      store: running.storeStats(),
    };
  },
  /** The live session count alone: what progress tickers poll (no /proc/self/fd walk, ~20 ms at 19k sockets). */
  sessions: () => running.sessions(),
  resetEld: () => {
    eld.reset();
    return true;
  },
  /** CPU and event-loop delay since the last reset, then a reset: cheap enough to poll (no /proc/self/fd walk). */
  takeEld: () => {
    const cpu = process.cpuUsage();
    const taken = { cpuMs: (cpu.user + cpu.system) / 1000, eldMaxMs: eld.max / 1e6 };
    eld.reset();
    return taken;
  },
  gc: async ({ rounds = 3 }: { rounds?: number } = {}) => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) throw new Error('start the server process with --expose-gc');
    for (let i = 0; i < rounds; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    // The collection itself is not an event-loop stall of the server's making.
    eld.reset();
    return true;
  },
  setPayload: ({ body }: { body: string }) => {
    running.setPayload(body);
    return true;
  },
  ...cpuProfilerHandlers(),
  heapSnapshot: ({ file }: { file: string }) => writeHeapSnapshot(file),
  stop: async () => {
    await running.close();
    setImmediate(() => process.exit(0));
    return true;
  },
}).emit('ready', {
  url: running.url,
  port: running.port,
  pid: process.pid,
  adminKeyFile: running.adminKeyFile,
  startupMs: performance.now(),
} satisfies ServerReady);
