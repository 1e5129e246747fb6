import { join } from 'node:path';
import { type Harness, type ServerHandle, tearDown } from '../harness.js';
import type { Child } from '../lib/procs.js';
import { monoMs, pollUntil, sleep, split, summarize } from '../lib/stats.js';
import { identitiesNeeded, stepTargets } from '../plan.js';
import {
  type AllReady,
  type ClientStatus,
  type CloseSeen,
  type ConnectResult,
  type FleetKind,
  type Group,
  type GroupClosed,
  KIND_LABEL,
  type ServerStats,
} from '../protocol.js';
import type { FleetResult, MassResult, RevokeResult, StepResult, StormResult } from '../results.js';

/** What the project fleet starts from: the enrollment phase's data dir, port, clients and groups. */
export interface ProjectSetup {
  dataDir: string;
  port: number;
  clients: Child[];
  groupIds: Record<Group, string>;
}

/**
 * Scenarios 1, 2, 3 and 5 for one kind of server, on one fleet of simulated connectors: at each
 * step N, connect up to N (server CPU per connect), idle CPU, memory after GC, then 200 revokes one
 * by one; at the mass step delete group A (half the sessions); at the last step kill -9 the server,
 * restart it and time the fleet's return.
 */
export async function runFleet(
  h: Harness,
  kind: FleetKind,
  project: ProjectSetup | null,
): Promise<FleetResult> {
  const { plan } = h;
  const label = KIND_LABEL[kind];
  let server = await h.startServer(kind, {
    ...(project ? { dataDir: project.dataDir, port: project.port } : {}),
    name: `${kind}-fleet`,
  });
  const clients: Child[] = project?.clients ?? [];
  const result: FleetResult = { kind, baseRssBytes: 0, baseHeapBytes: 0, steps: [], mass: null, storm: null };
  try {
    if (!project) {
      const needed = identitiesNeeded(plan);
      const a = split(needed.A, plan.clientProcs);
      const b = split(needed.B, plan.clientProcs);
      for (let i = 0; i < plan.clientProcs; i++) {
        const client = h.startClient(kind, server.url, `${kind}-client${i + 1}`);
        clients.push(client);
        await client.peer.call('synth', { counts: { A: a[i]! + 2, B: b[i]! + plan.steps.length + 2 } });
      }
    }
    await warmUp(h, server, clients);
    const base = plan.quick ? await server.gcStats() : await server.settledStats();
    await heapSnapshot(h, server, 0);
    result.baseRssBytes = base.rssBytes;
    result.baseHeapBytes = base.heapUsedBytes;
    h.progress(
      `${label}: server up in ${(server.startMs / 1000).toFixed(1)} s, RSS ${mb(base.rssBytes)} MB, heap ${mb(base.heapUsedBytes)} MB`,
    );

    const lastN = plan.steps[plan.steps.length - 1]!;
    for (const n of plan.steps) {
      h.checkDeadline();
      const profile = h.options.profile && kind !== 'bare' && n === lastN;
      const step = await measureStep(h, server, clients, n, profile, base);
      result.steps.push(step);
      if (n === plan.massStep) {
        await connectTo(h, server, clients, stepTargets(plan, n), `${label}: top up to ${n}`);
        result.mass = await massRevoke(h, server, clients, project?.groupIds.A ?? null);
      }
      // The minimal tRPC storm is an extra floor, left out of the smoke run to keep it short.
      if (n === lastN && !(plan.quick && kind === 'trpc')) {
        // When the last step was also the mass step, group A is gone: the storm runs with group B.
        const targets = n === plan.massStep ? { A: 0, B: stepTargets(plan, n).B } : stepTargets(plan, n);
        await connectTo(h, server, clients, targets, `${label}: top up to ${targets.A + targets.B}`);
        const storm = await reconnectStorm(h, server, clients, project);
        server = storm.server;
        result.storm = storm.result;
      }
    }
    return result;
  } finally {
    await tearDown(clients, server);
  }
}

/** Connects and closes `warmupSessions` sessions, so one-off costs are in the baseline memory. */
async function warmUp(h: Harness, server: ServerHandle, clients: Child[]): Promise<void> {
  await connectTo(
    h,
    server,
    clients,
    { A: 0, B: h.plan.warmupSessions },
    `${KIND_LABEL[server.kind]}: warm-up`,
  );
  await Promise.all(clients.map((c) => c.peer.call('stopAll', { timeoutMs: 20_000 }, 30_000)));
  await pollUntil(
    'the warm-up sessions to end on the server',
    async () => ((await server.stats()).sessions === 0 ? true : undefined),
    20_000,
  );
  await sleep(1000);
}

/** With --heap-snapshots, the server's heap (after the GC just done) for scripts/bench/heap-diff.ts. */
async function heapSnapshot(h: Harness, server: ServerHandle, n: number): Promise<void> {
  if (!h.options.heapSnapshots || server.kind === 'bare') return;
  const file = join(h.outDir, `heap-${server.kind}-${n}.heapsnapshot`);
  await server.child.peer.call('heapSnapshot', { file }, 600_000);
  h.progress(`${KIND_LABEL[server.kind]}: heap snapshot ${file}`);
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

async function measureStep(
  h: Harness,
  server: ServerHandle,
  clients: Child[],
  n: number,
  profile: boolean,
  base: ServerStats,
): Promise<StepResult> {
  const label = KIND_LABEL[server.kind];
  const before = await server.stats();
  await server.resetEld();
  if (profile) await server.child.peer.call('cpuProfileStart');
  const connected = await connectTo(h, server, clients, stepTargets(h.plan, n), `${label}: connect to ${n}`);
  await sleep(500);
  const after = await server.stats();
  if (profile)
    await server.child.peer.call('cpuProfileStop', {
      file: join(h.outDir, `profile-connect-${server.kind}-${n}.cpuprofile`),
    });
  const newSessions = Math.max(1, n - before.sessions);

  // Idle: N sessions with nothing to do (keepAlive pings only), once the project's lazy store
  // flush (5 s after the connects touched it) is over.
  await sleep(h.plan.quick ? 1000 : 8000);
  const idle0 = await server.stats();
  const idleStart = monoMs();
  await sleep(h.plan.idleCpuWindowMs);
  const idle1 = await server.stats();
  const idleCpuPct = ((idle1.cpuMs - idle0.cpuMs) / (monoMs() - idleStart)) * 100;

  // The smoke run skips the RSS settling (seconds per measurement); its numbers are not meaningful anyway.
  const mem = h.plan.quick ? await server.gcStats() : await server.settledStats();
  await heapSnapshot(h, server, n);
  const step: StepResult = {
    n,
    newSessions,
    connectMs: connected.durationMs,
    handshakeCpuUs: ((after.cpuMs - before.cpuMs) * 1000) / newSessions,
    handshakeSystemCpuUs: ((after.cpuSystemMs - before.cpuSystemMs) * 1000) / newSessions,
    idleCpuPct,
    rssBytes: mem.rssBytes,
    heapBytes: mem.heapUsedBytes,
    rssPerSessionBytes: (mem.rssBytes - base.rssBytes) / mem.sessions,
    heapPerSessionBytes: (mem.heapUsedBytes - base.heapUsedBytes) / mem.sessions,
    openFds: mem.openFds,
    connectEldMaxMs: after.eld.maxMs,
    revoke: null,
  };
  h.progress(
    `${label}: ${mem.sessions} live, RSS ${mb(mem.rssBytes)} MB, heap ${mb(mem.heapUsedBytes)} MB, ` +
      `${step.handshakeCpuUs.toFixed(0)} µs CPU per connect (${step.handshakeSystemCpuUs.toFixed(0)} in the kernel), idle ${idleCpuPct.toFixed(1)} % CPU, ${mem.openFds} fds`,
  );
  step.revoke = await revokeRound(h, server, clients, n, profile);
  return step;
}

/** Brings each client process to its share of `targets` live sessions and waits until all are ready. */
async function connectTo(
  h: Harness,
  server: ServerHandle,
  clients: Child[],
  targets: Partial<Record<Group, number>>,
  what: string,
): Promise<ConnectResult> {
  const a = split(targets.A ?? 0, clients.length);
  const b = split(targets.B ?? 0, clients.length);
  const t0 = monoMs();
  const ticker = setInterval(() => {
    server
      .sessions()
      .then((n) => h.progress(`${what}: ${n} sessions on the server`))
      .catch(() => {});
  }, 5000);
  try {
    const results = await Promise.all(
      clients.map((client, i) =>
        client.peer.call<ConnectResult>(
          'connect',
          {
            targets: { A: a[i]!, B: b[i]! },
            localAddress: h.freshAddress(),
            concurrency: h.plan.connectConcurrencyPerProc,
            timeoutMs: h.plan.connectTimeoutMs,
          },
          h.plan.connectTimeoutMs + 30_000,
        ),
      ),
    );
    const notReady = results.reduce((sum, r) => sum + r.notReady, 0);
    const started = results.reduce((sum, r) => sum + r.started, 0);
    if (notReady > 0) {
      const statuses = await Promise.all(clients.map((c) => c.peer.call<ClientStatus>('status')));
      throw new Error(
        `${what}: ${notReady} of ${started} sessions not ready after ${h.plan.connectTimeoutMs} ms; ` +
          `client messages: ${JSON.stringify(statuses.flatMap((s) => s.lastMessages))}\n${server.child.tail(10)}`,
      );
    }
    return { started, ready: started, notReady: 0, durationMs: monoMs() - t0 };
  } finally {
    clearInterval(ticker);
  }
}

/** Closes one session the way each server does it: the project's admin revoke, a baseline's /close. */
function revokeCall(server: ServerHandle, id: string): Promise<unknown> {
  if (server.kind === 'project')
    return server.requireAdmin().connectors.revoke.mutate({ connectorId: id, reason: 'bench' });
  return fetch(`${server.url}/close?id=${encodeURIComponent(id)}`, { method: 'POST' }).then((r) => r.text());
}

async function revokeRound(
  h: Harness,
  server: ServerHandle,
  clients: Child[],
  n: number,
  profile: boolean,
): Promise<RevokeResult> {
  const shares = split(h.plan.revokesPerStep, clients.length);
  const picked = await Promise.all(
    clients.map((c, i) => c.peer.call<string[]>('pickReady', { group: 'B', count: shares[i] })),
  );
  // Round-robin over the client processes, random within each.
  const victims: Array<{ client: Child; id: string }> = [];
  for (let k = 0; victims.length < h.plan.revokesPerStep && k < h.plan.revokesPerStep; k++) {
    for (let i = 0; i < clients.length; i++) {
      const id = picked[i]![k];
      if (id) victims.push({ client: clients[i]!, id });
    }
  }
  await server.resetEld();
  if (profile) await server.child.peer.call('cpuProfileStart');
  const latencies: number[] = [];
  const calls: number[] = [];
  let missed = 0;
  for (const { client, id } of victims) {
    const t0 = monoMs();
    const seen = client.peer.call<CloseSeen | null>(
      'awaitClose',
      { id, sinceMs: t0, timeoutMs: 10_000 },
      20_000,
    );
    await revokeCall(server, id);
    calls.push(monoMs() - t0);
    const close = await seen;
    if (close) latencies.push(close.closeAtMs - t0);
    else missed++;
  }
  const stats = await server.stats();
  if (profile)
    await server.child.peer.call('cpuProfileStop', {
      file: join(h.outDir, `profile-revoke-${server.kind}-${n}.cpuprofile`),
    });
  const result: RevokeResult = {
    latencyMs: summarize(latencies),
    callMs: summarize(calls),
    missed,
    eldMaxMs: stats.eld.maxMs,
  };
  h.progress(
    `${KIND_LABEL[server.kind]}: ${victims.length} revokes at ${n} live: close seen p50 ${result.latencyMs.p50.toFixed(1)} ms, ` +
      `p99 ${result.latencyMs.p99.toFixed(1)} ms (call p50 ${result.callMs.p50.toFixed(1)} ms)${missed ? `, ${missed} missed` : ''}`,
  );
  return result;
}

async function massRevoke(
  h: Harness,
  server: ServerHandle,
  clients: Child[],
  groupAId: string | null,
): Promise<MassResult> {
  await server.resetEld();
  const profile = h.options.profile && server.kind !== 'bare';
  if (profile) await server.child.peer.call('cpuProfileStart');
  const t0 = monoMs();
  const timeoutMs = 60_000;
  const waits = clients.map((c) =>
    c.peer.call<GroupClosed>('awaitGroupClosed', { group: 'A', sinceMs: t0, timeoutMs }, timeoutMs + 10_000),
  );
  if (server.kind === 'project') {
    await server.requireAdmin().groups.delete.mutate({ groupId: groupAId!, force: true });
  } else {
    await fetch(`${server.url}/close-group?group=A`, { method: 'POST' }).then((r) => r.text());
  }
  const callMs = monoMs() - t0;
  const seen = await Promise.all(waits);
  const stats = await server.stats();
  if (profile)
    await server.child.peer.call('cpuProfileStop', {
      file: join(h.outDir, `profile-mass-revoke-${server.kind}.cpuprofile`),
    });
  const closed = seen.reduce((s, g) => s + g.closed, 0);
  const result: MassResult = {
    count: seen.reduce((s, g) => s + g.count, 0),
    closed,
    allClosedMs: Math.max(...seen.map((g) => g.lastCloseAtMs)) - t0,
    firstClosedMs: Math.min(...seen.filter((g) => g.closed > 0).map((g) => g.firstCloseAtMs)) - t0,
    callMs,
    eldMaxMs: stats.eld.maxMs,
  };
  h.progress(
    `${KIND_LABEL[server.kind]}: group A deleted: ${closed}/${result.count} closed, last after ${result.allClosedMs.toFixed(0)} ms ` +
      `(call ${callMs.toFixed(0)} ms)`,
  );
  if (closed < result.count)
    throw new Error(`mass revoke: only ${closed} of ${result.count} sessions closed`);
  return result;
}

/** SIGKILLs the server, restarts it on the same port and data, and waits for every session to return. */
async function reconnectStorm(
  h: Harness,
  server: ServerHandle,
  clients: Child[],
  project: ProjectSetup | null,
): Promise<{ server: ServerHandle; result: StormResult }> {
  const label = KIND_LABEL[server.kind];
  await Promise.all(clients.map((c) => c.peer.call('mark')));
  const n = (await server.stats()).sessions;
  h.progress(`${label}: kill -9 the server with ${n} live sessions`);
  const tKill = monoMs();
  await server.child.stop('SIGKILL');
  const restarted = await h.startServer(server.kind, {
    ...(project ? { dataDir: project.dataDir } : {}),
    port: server.ready.port,
    name: `${server.kind}-restarted`,
  });
  const tListen = monoMs();
  const atListen = await restarted.stats();
  await restarted.resetEld();
  if (h.options.profile && server.kind === 'project') await restarted.child.peer.call('cpuProfileStart');
  h.progress(`${label}: restarted in ${((tListen - tKill) / 1000).toFixed(1)} s; waiting for the fleet`);

  let done = false;
  const adminLatencies: number[] = [];
  let adminErrors = 0;
  const adminLoop = (async () => {
    if (!restarted.admin) return;
    for (let i = 0; !done; i++) {
      const t0 = monoMs();
      try {
        if (i % 2 === 0) await restarted.admin.connectors.counts.query({});
        else await restarted.admin.connectors.list.query({});
        adminLatencies.push(monoMs() - t0);
      } catch {
        adminErrors++;
        adminLatencies.push(monoMs() - t0);
      }
      await sleep(250);
    }
  })();
  const ticker = setInterval(() => {
    Promise.all(clients.map((c) => c.peer.call<ClientStatus>('status')))
      .then((s) => h.progress(`${label}: ${s.reduce((sum, x) => sum + x.ready, 0)}/${n} back`))
      .catch(() => {});
  }, 3000);
  let back: AllReady[];
  try {
    back = await Promise.all(
      clients.map((c) =>
        c.peer.call<AllReady>(
          'awaitAllReady',
          { sinceMs: tKill, timeoutMs: h.plan.stormTimeoutMs },
          h.plan.stormTimeoutMs + 15_000,
        ),
      ),
    );
  } finally {
    clearInterval(ticker);
    done = true;
    await adminLoop;
  }
  const stats = await restarted.stats();
  if (h.options.profile && server.kind === 'project')
    await restarted.child.peer.call('cpuProfileStop', { file: join(h.outDir, 'profile-storm.cpuprofile') });
  const statuses = await Promise.all(clients.map((c) => c.peer.call<ClientStatus>('status')));
  const lastBack = Math.max(...back.map((b) => b.lastReadyAtMs));
  const ready = back.reduce((s, b) => s + b.ready, 0);
  const liveNow = back.reduce((s, b) => s + b.live, 0);
  const admin = summarize(adminLatencies);
  const result: StormResult = {
    n,
    allBackMs: lastBack - tKill,
    backAfterListenMs: lastBack - tListen,
    serverRestartMs: tListen - tKill,
    back: ready,
    notBack: n - ready,
    gaveUp: statuses.reduce((s, x) => s + x.endedSinceMark, 0),
    exitCodes: statuses.reduce(
      (all, x) => {
        for (const [code, count] of Object.entries(x.exitCodesSinceMark))
          all[code] = (all[code] ?? 0) + count;
        return all;
      },
      {} as Record<string, number>,
    ),
    warnings: statuses.reduce((s, x) => s + x.warningsSinceMark, 0),
    errors: statuses.reduce((s, x) => s + x.errorsSinceMark, 0),
    socketsOpened: statuses.reduce((s, x) => s + x.socketsOpenedSinceMark, 0),
    peakRssBytes: stats.peakRssBytes,
    cpuMs: stats.cpuMs - atListen.cpuMs,
    cpuPctOfCore: ((stats.cpuMs - atListen.cpuMs) / Math.max(1, lastBack - tListen)) * 100,
    eldMaxMs: stats.eld.maxMs,
    admin: restarted.admin
      ? {
          calls: admin.count,
          p50Ms: admin.p50,
          p99Ms: admin.p99,
          maxMs: admin.max,
          errors: adminErrors,
          over1s: adminLatencies.filter((ms) => ms > 1000).length,
        }
      : null,
    lastMessages: statuses.flatMap((s) => s.lastMessages).slice(0, 5),
  };
  h.progress(
    `${label}: ${ready}/${n} back ${(result.allBackMs / 1000).toFixed(1)} s after the kill ` +
      `(${liveNow} live, ${result.gaveUp} gave up, ${result.warnings} warnings, peak RSS ${mb(result.peakRssBytes)} MB, ` +
      `CPU ${(result.cpuMs / 1000).toFixed(1)} s, max event-loop delay ${result.eldMaxMs.toFixed(0)} ms` +
      `${result.admin ? `, admin max ${result.admin.maxMs.toFixed(0)} ms` : ''})`,
  );
  return { server: restarted, result };
}
