/**
 * A client process of the harness: holds thousands of simulated connectors (each its own session
 * and socket, from one 127.0.0.x source address per batch) and reports what they see, with
 * CLOCK_MONOTONIC times the harness can compare with its own.
 *
 *   forked by main.ts: scripts/bench/client-proc.ts --kind project|bare|trpc --url URL --name c1
 */
import { setMaxListeners } from 'node:events';
import { parseArgs } from 'node:util';
import { EnrollmentRefused, enroll } from '../../agent/enroll.js';
import type { SavedIdentity } from '../../agent/identity-store.js';
import { replicaOps } from './clients/replica-ops.js';
import { agentTransport, BareSim, ProjectSim, type Sim, type SimHooks, TrpcSim } from './clients/sims.js';
import { cpuProfilerHandlers } from './lib/cpu-profiler.js';
import { fetchFrom } from './lib/http.js';
import { serveIpc } from './lib/ipc.js';
import { benchHostFacts } from './lib/seed-store.js';
import { monoMs } from './lib/stats.js';
import {
  type AllReady,
  type ClientStatus,
  type CloseSeen,
  type ConnectArgs,
  type ConnectResult,
  type EnrollArgs,
  type EnrollResult,
  type FleetKind,
  GROUPS,
  type Group,
  type GroupClosed,
  type RenewalsSeen,
} from './protocol.js';

const { values } = parseArgs({
  options: { kind: { type: 'string' }, url: { type: 'string' }, name: { type: 'string', default: 'client' } },
});
const kind = values.kind as FleetKind;
const serverUrl = values.url ?? '';
const name = values.name ?? 'client';

/** Sims not yet started, per group. */
const pool: Record<Group, Sim[]> = { A: [], B: [], C: [] };
/** Started sims that have not ended. */
const live = new Set<Sim>();
const byId = new Map<string, Sim>();
const changeListeners = new Set<(sim: Sim) => void>();
let mark = { endedSinceMark: 0, exitCodes: {} as Record<string, number>, warnings: 0, errors: 0, sockets: 0 };
const lastMessages: string[] = [];
/** Renewed identities the sims saved since the last mark, with the first and last times (monoMs). */
let renewals: RenewalsSeen = { count: 0, firstAtMs: 0, lastAtMs: 0 };
/** Each connector counts once however often it renewed. */
const renewedSims = new Set<string>();
const remember = (message: string) => {
  lastMessages.push(message.slice(0, 300));
  if (lastMessages.length > 5) lastMessages.shift();
};

const hooks: SimHooks = {
  changed: (sim) => {
    if (sim.ended && live.delete(sim)) {
      mark.endedSinceMark++;
      mark.exitCodes[String(sim.exitCode)] = (mark.exitCodes[String(sim.exitCode)] ?? 0) + 1;
    }
    for (const listener of [...changeListeners]) listener(sim);
  },
  socketOpened: () => {
    mark.sockets++;
  },
  renewed: (sim) => {
    const at = monoMs();
    renewedSims.add(sim.id);
    renewals.count = renewedSims.size;
    renewals.firstAtMs ||= at;
    renewals.lastAtMs = at;
  },
  warn: (message) => {
    mark.warnings++;
    remember(`warn ${message}`);
  },
  error: (message) => {
    mark.errors++;
    remember(`error ${message}`);
  },
};

function addSim(sim: Sim): void {
  pool[sim.group].push(sim);
  byId.set(sim.id, sim);
}

/** Resolves when `done()` holds, re-checked on every sim change and every 250 ms, or at the deadline. */
function waitFor<T>(
  check: () => T | undefined,
  timeoutMs: number,
  onTimeout: () => T,
  onChange?: (sim: Sim) => void,
): Promise<T> {
  return new Promise((resolve) => {
    let finished = false;
    const finish = (value: T) => {
      if (finished) return;
      finished = true;
      changeListeners.delete(listener);
      clearInterval(ticker);
      clearTimeout(timer);
      resolve(value);
    };
    const attempt = () => {
      const value = check();
      if (value !== undefined) finish(value);
    };
    const listener = (sim: Sim) => {
      onChange?.(sim);
      attempt();
    };
    changeListeners.add(listener);
    const ticker = setInterval(attempt, 250);
    const timer = setTimeout(() => finish(onTimeout()), timeoutMs);
    attempt();
  });
}

/** Resolves with `result()` once `pending` is empty (`onChange` takes sims out of it), or at the deadline. */
function waitUntilEmpty<T>(
  pending: Set<Sim>,
  timeoutMs: number,
  result: () => T,
  onChange: (sim: Sim) => void,
): Promise<T> {
  return waitFor(() => (pending.size === 0 ? result() : undefined), timeoutMs, result, onChange);
}

function liveCount(group: Group): number {
  let n = 0;
  for (const sim of live) if (sim.group === group) n++;
  return n;
}

async function enrollMany(args: EnrollArgs): Promise<EnrollResult> {
  if (kind !== 'project') throw new TypeError('enroll is for the project only');
  const transport = { ...agentTransport, fetch: fetchFrom(args.localAddress) };
  const jobs: Group[] = [];
  for (const group of GROUPS) for (let i = 0; i < (args.counts[group] ?? 0); i++) jobs.push(group);
  const controller = new AbortController();
  // Every concurrent enrollment listens on this one signal.
  setMaxListeners(0, controller.signal);
  const timer = setTimeout(() => controller.abort(), args.timeoutMs);
  const logger = {
    info: () => {},
    warn: (message: string, fields?: Record<string, unknown>) =>
      hooks.warn(`${message} ${JSON.stringify(fields ?? {})}`),
    error: (message: string) => hooks.error(message),
  };
  const warningsBefore = mark.warnings;
  const latenciesMs: number[] = [];
  let enrolled = 0;
  let failed = 0;
  let firstError: string | null = null;
  let next = 0;
  const started = monoMs();
  const worker = async () => {
    while (next < jobs.length && !controller.signal.aborted) {
      const group = jobs[next++]!;
      const hostName = `${name}-${group}-${pool[group].length + live.size + next}`;
      const facts = benchHostFacts(hostName);
      const t0 = monoMs();
      try {
        const identity: SavedIdentity | null = await enroll(
          {
            servers: [args.url ?? serverUrl],
            provisioningKey: args.keys[group] ?? '',
            keyFileProblem: null,
            keyExposure: null,
            stateDir: '(memory)',
            name: hostName,
            caPem: null,
            allowInsecure: false,
            allowServerChange: false,
            logFormat: 'text',
          },
          transport,
          logger,
          controller.signal,
          facts,
        );
        if (!identity) throw new Error('enrollment aborted (time bound reached)');
        latenciesMs.push(monoMs() - t0);
        addSim(new ProjectSim(identity, group, hooks, facts));
        enrolled++;
      } catch (error) {
        failed++;
        firstError ??= error instanceof EnrollmentRefused ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, args.concurrency) }, worker));
  clearTimeout(timer);
  return {
    enrolled,
    failed,
    durationMs: monoMs() - started,
    latenciesMs,
    warnings: mark.warnings - warningsBefore,
    firstError,
  };
}

/** Starts `sims`, at most `concurrency` handshakes at once, and waits (bounded) until each is ready or ended. */
async function startAll(
  sims: Sim[],
  localAddress: string,
  concurrency: number,
  timeoutMs: number,
): Promise<{ ready: number; notReady: number; durationMs: number }> {
  const t0 = monoMs();
  const toStart = [...sims];
  let inFlight = 0;
  const pending = new Set<Sim>();
  const pump = () => {
    while (inFlight < concurrency && toStart.length > 0) {
      const sim = toStart.shift()!;
      live.add(sim);
      pending.add(sim);
      inFlight++;
      sim.start(localAddress);
    }
  };
  pump();
  const summary = () => {
    const ready = sims.filter((sim) => sim.ready).length;
    return { ready, notReady: sims.length - ready, durationMs: monoMs() - t0 };
  };
  return waitFor(
    () => (toStart.length === 0 && pending.size === 0 ? summary() : undefined),
    timeoutMs,
    summary,
    (sim) => {
      if ((sim.ready || sim.ended) && pending.delete(sim)) {
        inFlight--;
        pump();
      }
    },
  );
}

/** Starts pooled sims until `targets` are live, at most `concurrency` handshakes at once; waits until ready. */
async function connect(args: ConnectArgs): Promise<ConnectResult> {
  const toStart: Sim[] = [];
  for (const group of GROUPS) {
    const missing = (args.targets[group] ?? 0) - liveCount(group);
    if (missing > pool[group].length)
      throw new Error(`${name}: needs ${missing} more ${group} connectors, has ${pool[group].length}`);
    for (let i = 0; i < missing; i++) toStart.push(pool[group].shift()!);
  }
  const result = await startAll(toStart, args.localAddress, args.concurrency, args.timeoutMs);
  let ready = 0;
  for (const sim of live) if (sim.ready) ready++;
  return { started: live.size, ready, notReady: live.size - ready, durationMs: result.durationMs };
}

/**
 * Connects every pooled sim once, `waveSize` at a time, and closes it again: a newly enrolled
 * connector's first session may do bookkeeping that later sessions do not.
 */
async function firstConnect(args: {
  localAddress: string;
  concurrency: number;
  waveSize: number;
  timeoutMs: number;
}): Promise<{ connected: number; notReady: number; durationMs: number }> {
  const t0 = monoMs();
  let connected = 0;
  let notReady = 0;
  for (const group of ['A', 'B', 'C'] as const) {
    const all = pool[group].splice(0);
    for (let i = 0; i < all.length; i += args.waveSize) {
      const wave = all.slice(i, i + args.waveSize);
      const result = await startAll(wave, args.localAddress, args.concurrency, args.timeoutMs);
      connected += result.ready;
      notReady += result.notReady;
      for (const sim of wave) await sim.stop();
      await waitFor(
        () => (wave.every((sim) => sim.ended) ? true : undefined),
        30_000,
        () => false,
      );
      for (const sim of wave) {
        live.delete(sim);
        const fresh = sim.fresh();
        byId.set(fresh.id, fresh);
        pool[group].push(fresh);
      }
    }
  }
  return { connected, notReady, durationMs: monoMs() - t0 };
}

function status(): ClientStatus {
  let ready = 0;
  for (const sim of live) if (sim.ready) ready++;
  return {
    pid: process.pid,
    live: { A: liveCount('A'), B: liveCount('B'), C: liveCount('C') },
    ready,
    notReady: live.size - ready,
    pool: { A: pool.A.length, B: pool.B.length, C: pool.C.length },
    endedSinceMark: mark.endedSinceMark,
    exitCodesSinceMark: { ...mark.exitCodes },
    warningsSinceMark: mark.warnings,
    errorsSinceMark: mark.errors,
    socketsOpenedSinceMark: mark.sockets,
    lastMessages: [...lastMessages],
    rssBytes: process.memoryUsage().rss,
  };
}

serveIpc({
  ...replicaOps({ pool, live, byId, waitFor }),
  ...cpuProfilerHandlers(),
  enroll: enrollMany,
  /** Baselines need no enrollment: ids are made up. */
  synth: ({ counts }: { counts: Partial<Record<Group, number>> }) => {
    for (const group of GROUPS) {
      for (let i = 0; i < (counts[group] ?? 0); i++) {
        const id = `${name}-${group}-${pool[group].length}-${Math.random().toString(36).slice(2, 8)}`;
        addSim(
          kind === 'bare'
            ? new BareSim(id, group, hooks, serverUrl)
            : new TrpcSim(id, group, hooks, serverUrl),
        );
      }
    }
    return { A: pool.A.length, B: pool.B.length };
  },
  connect,
  firstConnect,
  status,
  renewals: (): RenewalsSeen => ({ ...renewals }),
  mark: () => {
    mark = { endedSinceMark: 0, exitCodes: {}, warnings: 0, errors: 0, sockets: 0 };
    renewals = { count: 0, firstAtMs: 0, lastAtMs: 0 };
    renewedSims.clear();
    lastMessages.length = 0;
    return true;
  },
  /** Ids of `count` random ready sims of `group`. */
  pickReady: ({ group, count }: { group: Group; count: number }) => {
    const candidates = [...live].filter((s) => s.group === group && s.ready);
    for (let i = candidates.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
    }
    return candidates.slice(0, count).map((s) => s.id);
  },
  /** The first close of sim `id` at or after `sinceMs` (monoMs). */
  awaitClose: ({ id, sinceMs, timeoutMs }: { id: string; sinceMs: number; timeoutMs: number }) => {
    const sim = byId.get(id);
    if (!sim) throw new Error(`${name}: no sim ${id}`);
    return waitFor<CloseSeen | null>(
      () => {
        const close = sim.firstCloseSince(sinceMs);
        return close ? { id, closeAtMs: close.at, code: close.code } : undefined;
      },
      timeoutMs,
      () => null,
    );
  },
  /** Waits until every live sim of `group` has closed at or after `sinceMs`. */
  awaitGroupClosed: ({ group, sinceMs, timeoutMs }: { group: Group; sinceMs: number; timeoutMs: number }) => {
    const members = [...live].filter((s) => s.group === group);
    const open = new Set(members.filter((s) => !s.firstCloseSince(sinceMs)));
    let first = Number.POSITIVE_INFINITY;
    let last = 0;
    for (const sim of members) {
      const close = sim.firstCloseSince(sinceMs);
      if (close) {
        first = Math.min(first, close.at);
        last = Math.max(last, close.at);
      }
    }
    const result = (): GroupClosed => ({
      count: members.length,
      closed: members.length - open.size,
      firstCloseAtMs: Number.isFinite(first) ? first : 0,
      lastCloseAtMs: last,
    });
    return waitUntilEmpty(open, timeoutMs, result, (sim) => {
      const close = open.has(sim) ? sim.firstCloseSince(sinceMs) : undefined;
      if (close) {
        open.delete(sim);
        first = Math.min(first, close.at);
        last = Math.max(last, close.at);
      }
    });
  },
  /** Waits until every live sim has become ready again at or after `sinceMs` (after a server restart). */
  awaitAllReady: ({ sinceMs, timeoutMs }: { sinceMs: number; timeoutMs: number }) => {
    const waiting = new Set([...live].filter((s) => !(s.ready && s.readyAt >= sinceMs)));
    let last = 0;
    for (const sim of live) if (sim.ready && sim.readyAt >= sinceMs) last = Math.max(last, sim.readyAt);
    const result = (): AllReady => ({
      live: live.size,
      ready: live.size - waiting.size,
      lastReadyAtMs: last,
    });
    return waitUntilEmpty(waiting, timeoutMs, result, (sim) => {
      if (!waiting.has(sim)) return;
      if (sim.ended) waiting.delete(sim);
      else if (sim.ready && sim.readyAt >= sinceMs) {
        waiting.delete(sim);
        last = Math.max(last, sim.readyAt);
      }
    });
  },
  /** Stops every live sim and waits (bounded) until they have ended. */
  stopAll: async ({ timeoutMs }: { timeoutMs: number }) => {
    const sims = [...live];
    for (const sim of sims) await sim.stop();
    return waitFor(
      () => (live.size === 0 ? 0 : undefined),
      timeoutMs,
      () => live.size,
    );
  },
});
