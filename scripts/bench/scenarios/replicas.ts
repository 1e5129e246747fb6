/**
 * The replicas phase: three server replicas on one PostgreSQL (a real one, from the npm package, as
 * the tests use), each holding up to 19,334 agents (under the 20,000 open files a process may
 * have), beside one server on the embedded store at the same per-server steps (the baseline of
 * memory, CPU per connect and revoke). Then: a group on one replica and a group spread over the
 * three deleted; enrollments through one and through two replicas beside PgStore's own commit rate;
 * one replica SIGKILLed while each holds 12,666, until its agents are back on the two others.
 */
import { copyFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createDatabase, type PostgresCluster, startPostgres } from '../../lib/postgres.js';
import { makeTempDir } from '../../lib/processes.js';
import type { MovedBack } from '../clients/replica-ops.js';
import { type Harness, type ServerHandle, tearDown } from '../harness.js';
import { type CpuSnapshot, cpuSnapshot } from '../lib/cpu.js';
import { measureCommits } from '../lib/pg-commits.js';
import type { Child } from '../lib/procs.js';
import { monoMs, split, summarize } from '../lib/stats.js';
import type { EnrollResult, Group } from '../protocol.js';
import type { ReplicaEnrollRate, ReplicaKillResult, ReplicasResult } from '../results.js';
import {
  connectEach,
  deleteGroup,
  firstSessions,
  measureStep,
  stopEverySession,
  type Targets,
  warmUp,
} from './replica-fleet.js';

/** What the phase measured so far: filled as it goes, so a failure late in the phase keeps the rest. */
export function emptyReplicasResult(count: number): ReplicasResult {
  return {
    replicas: count,
    embedded: [],
    postgres: [],
    massSingle: null,
    massSpread: null,
    enrollOne: null,
    enrollTwo: null,
    commitFloor: null,
    kill: null,
    firstSessions: { embedded: null, postgres: null },
  };
}

export async function runReplicas(h: Harness, result: ReplicasResult): Promise<void> {
  await runEmbeddedBaseline(h, result);
  // Each replica: a pool of 8, a listener, the cluster sessions' and signing keys' connections.
  const cluster = await startPostgres({ maxConnections: 200 });
  try {
    await using db = await createDatabase(cluster.url, 'ce_bench');
    await runOnPostgres(h, cluster, db.url, result);
  } finally {
    // Its checkpoints, with their times, next to the progress lines: a revoke's commit waits on the
    // WAL flush, which a checkpoint's writes slow down.
    await writeFile(h.logFile('postgres'), cluster.output()).catch(() => {});
    await cluster[Symbol.asyncDispose]();
  }
}

/** The largest per-server step's B sessions, the warm-up's and the revoked ones' replacements, per client. */
function bNeeded(h: Harness, clientsPerServer: number, mostB: number): number[] {
  const rp = h.plan.replicas;
  const slack = rp.steps.length * Math.ceil(rp.revokes / clientsPerServer) + 2;
  return split(mostB, clientsPerServer).map(
    (b, i) => b + split(rp.warmupPerServer, clientsPerServer)[i]! + slack,
  );
}

async function runEmbeddedBaseline(h: Harness, result: ReplicasResult): Promise<void> {
  const rp = h.plan.replicas;
  const k = rp.clientProcsPerReplica;
  const server = await h.startServer('project', {
    dataDir: makeTempDir('bench-embedded-'),
    name: 'embedded',
  });
  const clients: Child[] = [];
  try {
    const admin = server.requireAdmin();
    const group = await admin.groups.create.mutate({ name: 'bench-B' });
    const key = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    for (let i = 0; i < k; i++) clients.push(h.startClient('project', server.url, `embedded-client${i + 1}`));
    const last = rp.steps[rp.steps.length - 1]!;
    const b = bNeeded(h, k, last);
    await enrollThrough(
      h,
      clients,
      { B: key },
      b.map((B) => ({ B })),
      clients.map(() => server.url),
      'embedded',
    );
    const first = await firstSessions(h, [server], clients, [clients.map((_, i) => i)], 'embedded');
    if (result.firstSessions) result.firstSessions.embedded = first;
    const base = await warmUp(
      h,
      [server],
      clients,
      split(rp.warmupPerServer, k).map((B) => ({ B })),
      'embedded',
    );
    for (const n of rp.steps) {
      h.checkDeadline();
      const targets = split(n, k).map((B) => ({ B }));
      result.embedded.push(
        await measureStep(
          h,
          [server],
          clients,
          targets,
          [clients.map((_, i) => i)],
          n,
          base,
          () => server,
          'embedded',
        ),
      );
    }
  } finally {
    await tearDown(clients, server);
  }
}

async function runOnPostgres(
  h: Harness,
  cluster: PostgresCluster,
  databaseUrl: string,
  result: ReplicasResult,
): Promise<void> {
  const rp = h.plan.replicas;
  const k = rp.clientProcsPerReplica;
  const dirs = Array.from({ length: rp.count }, (_, i) => makeTempDir(`bench-replica${i + 1}-`));
  const replicas: ServerHandle[] = [
    await h.startServer('project', { dataDir: dirs[0]!, name: 'replica-1', databaseUrl }),
  ];
  const clients: Child[] = [];
  try {
    const admin = replicas[0]!.requireAdmin();
    const ids: Record<Group, string> = { A: '', B: '', C: '' };
    const keys: Record<Group, string> = { A: '', B: '', C: '' };
    for (const group of ['A', 'B', 'C'] as const) {
      ids[group] = (await admin.groups.create.mutate({ name: `bench-${group}` })).id;
      keys[group] = (await admin.provisioningKeys.get.query({ groupId: ids[group] })).key!;
    }
    const clientCount = k * rp.count;
    const home = (i: number) => Math.floor(i / k);
    for (let i = 0; i < clientCount; i++)
      clients.push(h.startClient('project', replicas[0]!.url, `replica-client${i + 1}`));

    // Who holds what at the last step: group A all on replica 1, group C spread, B the rest.
    const last = rp.steps[rp.steps.length - 1]!;
    const aOf = (i: number) => (home(i) === 0 ? split(rp.singleMass, k)[i % k]! : 0);
    const cOf = (i: number) => split(rp.spreadMass, clientCount)[i]!;
    const onReplica = (r: number, of: (i: number) => number) =>
      clients.reduce((n, _, i) => n + (home(i) === r ? of(i) : 0), 0);
    const bLast = (r: number) => last - onReplica(r, aOf) - onReplica(r, cOf);
    if (bLast(0) < 0) throw new TypeError('replicas: the mass-revoke groups do not fit in the last step');
    const bOf = (i: number) => {
      const r = home(i);
      const mostB = Math.max(bLast(r), ...rp.steps.slice(0, -1));
      return bNeeded(h, k, mostB)[i % k]!;
    };

    // Enrollment: a warm-up, then timed through one replica, then through two, then the rest.
    const warm = split(Math.max(30, rp.enrollCount / 10), clientCount);
    const timed = split(rp.enrollCount, clientCount);
    await enrollThrough(
      h,
      clients,
      keys,
      warm.map((B) => ({ B })),
      clients.map(() => replicas[0]!.url),
      'replica warm-up',
    );
    result.enrollOne = await timedEnrollment(h, cluster, replicas.slice(0, 1), clients, keys, timed, warm);
    for (let r = 1; r < rp.count; r++) {
      for (const file of ['secret.key', 'admin.key'])
        copyFileSync(join(dirs[0]!, file), join(dirs[r]!, file));
      replicas.push(
        await h.startServer('project', { dataDir: dirs[r]!, name: `replica-${r + 1}`, databaseUrl }),
      );
    }
    const stored = warm.map((w, i) => w + timed[i]!);
    result.enrollTwo = await timedEnrollment(h, cluster, replicas.slice(0, 2), clients, keys, timed, stored);
    const floor = await measureCommits(cluster.url, {
      replicas: 1,
      writers: h.plan.enrollConcurrency,
      contended: true,
      transactions: rp.enrollCount,
    });
    result.commitFloor = { ...floor };
    h.progress(
      `PgStore alone on this PostgreSQL: ${floor.perSecond} enrollment-shaped commits/s (${floor.writers} writers)`,
    );
    const done = stored.map((s, i) => s + timed[i]!);
    await enrollThrough(
      h,
      clients,
      keys,
      clients.map((_, i) => ({ A: aOf(i), B: Math.max(0, bOf(i) - done[i]!), C: cOf(i) })),
      clients.map((_, i) => replicas[home(i)]!.url),
      'the rest of the fleet, each client through its replica',
    );

    // Each client process's agents on its own replica only, for the steps.
    for (const [i, client] of clients.entries())
      for (const group of ['A', 'B', 'C'] as const)
        await client.peer.call('route', { group, lists: [[replicas[home(i)]!.url]] });
    // One replica's clients at a time (see measureStep).
    const turns = replicas.map((_, r) => clients.flatMap((_, i) => (home(i) === r ? [i] : [])));
    const first = await firstSessions(h, replicas, clients, turns, 'replicas');
    if (result.firstSessions) result.firstSessions.postgres = first;
    const base = await warmUp(
      h,
      replicas,
      clients,
      clients.map((_, i) => ({ B: split(rp.warmupPerServer, k)[i % k]! })),
      'replicas',
    );
    const next = (url: string) => replicas[(replicas.findIndex((r) => r.url === url) + 1) % replicas.length]!;
    for (const n of rp.steps) {
      h.checkDeadline();
      const targets: Targets[] =
        n === last
          ? clients.map((_, i) => ({ A: aOf(i), C: cOf(i), B: split(bLast(home(i)), k)[i % k]! }))
          : clients.map((_, i) => ({ B: split(n, k)[i % k]! }));
      result.postgres.push(
        await measureStep(h, replicas, clients, targets, turns, n, base, next, 'replicas'),
      );
    }
    result.massSingle = await deleteGroup(
      h,
      replicas[0]!,
      replicas,
      clients,
      'A',
      ids.A,
      'group A (all on replica 1) deleted',
      cluster.pid(),
    );
    result.massSpread = await deleteGroup(
      h,
      replicas[0]!,
      replicas,
      clients,
      'C',
      ids.C,
      'group C (on every replica) deleted through replica 1',
      cluster.pid(),
    );
    result.kill = await killOne(h, replicas, clients);
  } finally {
    await tearDown(clients, replicas[0]!);
    for (const replica of replicas.slice(1)) if (!replica.child.exit()) await replica.stop().catch(() => {});
  }
}

async function enrollThrough(
  h: Harness,
  clients: readonly Child[],
  keys: Partial<Record<Group, string>>,
  counts: ReadonlyArray<Partial<Record<Group, number>>>,
  urls: readonly string[],
  what: string,
): Promise<{ ms: number; enrolled: number; latenciesMs: number[] }> {
  const total = counts.reduce((n, c) => n + (c.A ?? 0) + (c.B ?? 0) + (c.C ?? 0), 0);
  h.progress(`${what}: enrolling ${total} connectors`);
  const concurrency = split(h.plan.enrollConcurrency, clients.length).map((c) => Math.max(1, c));
  const t0 = monoMs();
  const results = await Promise.all(
    clients.map((client, i) =>
      client.peer.call<EnrollResult>(
        'enroll',
        {
          keys,
          counts: counts[i],
          url: urls[i],
          concurrency: concurrency[i],
          localAddress: h.freshAddress(),
          timeoutMs: 900_000,
        },
        930_000,
      ),
    ),
  );
  const failed = results.reduce((n, r) => n + r.failed, 0);
  if (failed > 0)
    throw new Error(
      `${what}: ${failed} enrollments failed; first: ${results.find((r) => r.firstError)?.firstError}`,
    );
  return {
    ms: monoMs() - t0,
    enrolled: results.reduce((n, r) => n + r.enrolled, 0),
    latenciesMs: results.flatMap((r) => r.latenciesMs),
  };
}

/** `timed` enrollments (B) through `through`, the clients spread over them; where the CPU went. */
async function timedEnrollment(
  h: Harness,
  cluster: PostgresCluster,
  through: readonly ServerHandle[],
  clients: readonly Child[],
  keys: Partial<Record<Group, string>>,
  timed: readonly number[],
  storedBefore: readonly number[],
): Promise<ReplicaEnrollRate> {
  const before = await Promise.all(through.map((s) => s.stats()));
  const cpu0: CpuSnapshot = cpuSnapshot(cluster.pid());
  const run = await enrollThrough(
    h,
    clients,
    keys,
    timed.map((B) => ({ B })),
    clients.map((_, i) => through[i % through.length]!.url),
    `timed, through ${through.length} replica${through.length > 1 ? 's' : ''}`,
  );
  const cpu1 = cpuSnapshot(cluster.pid());
  const after = await Promise.all(through.map((s) => s.stats()));
  const serverMs = after.reduce((n, s, i) => n + s.cpuMs - before[i]!.cpuMs, 0);
  const rate: ReplicaEnrollRate = {
    replicas: through.length,
    storedBefore: storedBefore.reduce((n, s) => n + s, 0),
    count: run.enrolled,
    perSecond: run.enrolled / (run.ms / 1000),
    latencyMs: summarize(run.latenciesMs),
    serverCpuUsPerEnrollment: (serverMs * 1000) / run.enrolled,
    postgresCpuUsPerEnrollment: ((cpu1.treeMs - cpu0.treeMs) * 1000) / run.enrolled,
    machineBusyPct:
      ((cpu1.machineBusyMs - cpu0.machineBusyMs) / Math.max(1, cpu1.machineTotalMs - cpu0.machineTotalMs)) *
      100,
  };
  h.progress(
    `${rate.perSecond.toFixed(0)} enrollments/s through ${through.length} replica(s) (p99 ${rate.latencyMs.p99.toFixed(0)} ms; ` +
      `per enrollment: replicas ${rate.serverCpuUsPerEnrollment.toFixed(0)} µs, PostgreSQL ${rate.postgresCpuUsPerEnrollment.toFixed(0)} µs of CPU; ` +
      `machine ${rate.machineBusyPct.toFixed(0)} % busy)`,
  );
  return rate;
}

/** Every agent on every replica (random first, the next after a failure), then the last replica SIGKILLed. */
async function killOne(
  h: Harness,
  replicas: ServerHandle[],
  clients: readonly Child[],
): Promise<ReplicaKillResult> {
  const rp = h.plan.replicas;
  await stopEverySession(replicas, clients);
  const urls = replicas.map((r) => r.url);
  // Every order of the replicas: a third start on each, and those of the killed one split evenly.
  const orders: string[][] = [];
  const permute = (rest: string[], prefix: string[]) => {
    if (rest.length === 0) orders.push(prefix);
    for (const [i, url] of rest.entries())
      permute([...rest.slice(0, i), ...rest.slice(i + 1)], [...prefix, url]);
  };
  permute(urls, []);
  for (const client of clients) await client.peer.call('route', { group: 'B', lists: orders, recycle: true });
  await connectEach(
    h,
    replicas,
    clients,
    split(rp.killPerReplica * replicas.length, clients.length).map((B) => ({ B })),
    `replicas: every agent on every replica, ${rp.killPerReplica} each`,
  );
  const victim = replicas[replicas.length - 1]!;
  const sessionsBefore = (await Promise.all(replicas.map((r) => r.stats()))).map((s) => s.sessions);
  const watched = (
    await Promise.all(clients.map((c) => c.peer.call<number>('watch', { server: victim.url })))
  ).reduce((n, w) => n + w, 0);
  h.progress(
    `replicas: kill -9 replica ${replicas.length} with ${watched} agents (${sessionsBefore.join(' + ')} live)`,
  );
  const tKill = monoMs();
  await victim.child.stop('SIGKILL');
  const timeoutMs = h.plan.stormTimeoutMs;
  const moved = await Promise.all(
    clients.map((c) =>
      c.peer.call<MovedBack>('awaitWatchedBack', { sinceMs: tKill, timeoutMs }, timeoutMs + 15_000),
    ),
  );
  const survivors = replicas.slice(0, -1);
  const sessionsAfter = (await Promise.all(survivors.map((r) => r.stats()))).map((s) => s.sessions);
  const byReplica: Record<string, number> = {};
  for (const m of moved)
    for (const [url, count] of Object.entries(m.byServer)) {
      const name = String(urls.indexOf(url) + 1);
      byReplica[name] = (byReplica[name] ?? 0) + count;
    }
  const kill: ReplicaKillResult = {
    sessionsBefore,
    watched,
    back: moved.reduce((n, m) => n + m.back, 0),
    ended: moved.reduce((n, m) => n + m.ended, 0),
    allBackMs: Math.max(...moved.map((m) => m.lastReadyAtMs)) - tKill,
    byReplica,
    sessionsAfter,
  };
  h.progress(
    `replicas: ${kill.back}/${watched} back on the others ${(kill.allBackMs / 1000).toFixed(1)} s after the kill ` +
      `(${kill.ended} gave up; now ${sessionsAfter.join(' + ')} live)`,
  );
  return kill;
}
