import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createAdminClient } from '../../server/admin-client.js';
import { settleWithin } from '../lib/processes.js';
import { type Child, forkTs } from './lib/procs.js';
import { monoMs } from './lib/stats.js';
import type { Plan } from './plan.js';
import type { FleetKind, ServerReady, ServerStats } from './protocol.js';

/** The run's shared state: the plan, where logs go, progress lines, and source addresses. */
export class Harness {
  private readonly startedAt = monoMs();
  private nextAddress = 0;
  private logCount = 0;

  constructor(
    readonly plan: Plan,
    readonly outDir: string,
    readonly logDir: string,
    readonly options: { profile: boolean; heapSnapshots: boolean; logLevel: string },
  ) {}

  /** One progress line on stderr, with the time since the start. */
  progress(message: string): void {
    const elapsed = ((monoMs() - this.startedAt) / 1000).toFixed(1).padStart(7);
    process.stderr.write(`[${elapsed}s] ${message}\n`);
  }

  elapsedMs(): number {
    return monoMs() - this.startedAt;
  }

  checkDeadline(): void {
    if (this.elapsedMs() > this.plan.deadlineMs)
      throw new Error(`the run passed its time bound of ${this.plan.deadlineMs / 1000} s`);
  }

  /**
   * A loopback source address not used before in this run (127.0.1.2, 127.0.1.3, …): one address
   * runs out of ephemeral ports near 28k, and closed connections hold theirs for a minute.
   */
  freshAddress(): string {
    const n = this.nextAddress++;
    return `127.0.${1 + Math.floor(n / 250)}.${2 + (n % 250)}`;
  }

  logFile(name: string): string {
    return join(this.logDir, `${String(++this.logCount).padStart(2, '0')}-${name}.log`);
  }

  /** Starts a server under test in its own process and waits until it listens. */
  async startServer(
    kind: FleetKind,
    options: {
      dataDir?: string;
      port?: number;
      name?: string;
      identityTtlMs?: number;
      /** A replica on this PostgreSQL database (project only). */
      databaseUrl?: string;
    } = {},
  ): Promise<ServerHandle> {
    const args = ['--mode', kind, '--port', String(options.port ?? 0), '--log-level', this.options.logLevel];
    if (options.dataDir) args.push('--data-dir', options.dataDir);
    if (options.identityTtlMs) args.push('--identity-ttl-ms', String(options.identityTtlMs));
    const child = forkTs(options.name ?? `server-${kind}`, 'server-proc.ts', args, {
      logFile: this.logFile(options.name ?? `server-${kind}`),
      nodeArgs: ['--expose-gc', ...serverNodeArgs()],
      env: {
        ...process.env,
        NODE_ENV: 'production',
        BENCH_DATABASE_URL: options.databaseUrl ?? '',
      },
    });
    const t0 = monoMs();
    let ready: ServerReady;
    try {
      ready = await child.peer.once<ServerReady>('ready', 60_000);
    } catch (error) {
      await child.stop('SIGKILL');
      throw new Error(`${(error as Error).message}\n${child.tail()}`);
    }
    const adminKey = ready.adminKeyFile ? (await readFile(ready.adminKeyFile, 'utf8')).trim() : null;
    return new ServerHandle(kind, child, ready, adminKey, monoMs() - t0);
  }

  /** Forks one client process for `kind`, pointed at `url`. */
  startClient(kind: FleetKind, url: string, name: string): Child {
    return forkTs(name, 'client-proc.ts', ['--kind', kind, '--url', url, '--name', name], {
      logFile: this.logFile(name),
      nodeArgs: ['--max-old-space-size=4096'],
    });
  }
}

export class ServerHandle {
  readonly admin: ReturnType<typeof createAdminClient> | null;

  constructor(
    readonly kind: FleetKind,
    readonly child: Child,
    readonly ready: ServerReady,
    readonly adminKey: string | null,
    /** From fork to listening, seen by the harness. */
    readonly startMs: number,
  ) {
    this.admin = adminKey ? createAdminClient({ url: ready.url, adminKey }) : null;
  }

  get url(): string {
    return this.ready.url;
  }

  requireAdmin(): ReturnType<typeof createAdminClient> {
    if (!this.admin) throw new TypeError(`${this.kind} has no admin API`);
    return this.admin;
  }

  stats(): Promise<ServerStats> {
    return this.child.peer.call<ServerStats>('stats', {}, 30_000);
  }

  /**
   * Live sessions only, for progress lines polled during a measured window: `stats()` walks
   * /proc/self/fd, which at 19k sockets costs the server ~20 ms of CPU each time, and the replicas'
   * windows (three turns) are three times as long, so they would pay it three times as often.
   */
  sessions(): Promise<number> {
    return this.child.peer.call<number>('sessions', {}, 30_000);
  }

  /** Stats after `rounds` full collections (3 by default: what memory readings need to settle). */
  async gcStats(rounds = 3): Promise<ServerStats> {
    await this.child.peer.call('gc', { rounds }, 60_000);
    return this.stats();
  }

  /**
   * Stats after GC once the resident set has settled: RSS keeps falling for several seconds after
   * a burst of work even with forced collections (about 10 MB a few seconds after start-up here),
   * which at 1k sessions would be 10 KB per session of noise. Collects every second until two
   * readings agree within 0.5 MB (at most `maxMs`).
   */
  async settledStats(maxMs = 15_000): Promise<ServerStats> {
    const deadline = Date.now() + maxMs;
    let previous = await this.gcStats();
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const current = await this.gcStats();
      if (Math.abs(current.rssBytes - previous.rssBytes) < 512 * 1024 || Date.now() > deadline)
        return current;
      previous = current;
    }
  }

  /** CPU so far and the largest event-loop delay since the last reset, then resets it. */
  takeEld(): Promise<{ cpuMs: number; eldMaxMs: number }> {
    return this.child.peer.call('takeEld');
  }

  resetEld(): Promise<unknown> {
    return this.child.peer.call('resetEld');
  }

  async stop(): Promise<void> {
    try {
      await this.child.peer.call('stop', {}, 20_000);
      await settleWithin(this.child.exited, 10_000);
    } finally {
      await this.child.stop('SIGKILL');
    }
  }
}

/** Ends a scenario: its simulated agents stopped, their processes and then the server gone. */
export async function tearDown(clients: readonly Child[], server: ServerHandle): Promise<void> {
  await Promise.all(
    clients.map((c) => c.peer.call('stopAll', { timeoutMs: 20_000 }, 30_000).catch(() => null)),
  );
  await Promise.all(clients.map((c) => c.stop()));
  await server.stop().catch(() => {});
}

/** Extra node flags for the servers under test (main.ts's help: BENCH_SERVER_NODE_ARGS). */
function serverNodeArgs(): string[] {
  return (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((flag) => flag !== '');
}
