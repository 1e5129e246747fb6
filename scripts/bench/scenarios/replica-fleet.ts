/**
 * The measuring steps of the replicas phase, for a set of servers (three replicas, or the one
 * embedded-store server of the baseline) and client processes each pinned to its list of servers.
 */
import { join } from 'node:path';
import type { Harness, ServerHandle } from '../harness.js';
import { cpuSnapshot, processesCpuMs } from '../lib/cpu.js';
import { connectEachOnce } from '../lib/first-connect.js';
import { marginalCpuUsPerSession, type Turn } from '../lib/holding-cost.js';
import type { Child } from '../lib/procs.js';
import { monoMs, pollUntil, sleep, split, summarize } from '../lib/stats.js';
import type { ClientStatus, CloseSeen, ConnectResult, Group, GroupClosed, ServerStats } from '../protocol.js';
import type { MassResult, ReplicaStep, RevokeResult } from '../results.js';

export type Targets = Partial<Record<Group, number>>;

/**
 * How long the servers' CPU is sampled, idle, before a step and after it: long enough that one
 * periodic job (a 5 s heartbeat, a 30 s check) does not make the reading.
 */
const IDLE_SAMPLE_MS = 5000;

/** Brings each client process to its own `targets[i]` live sessions and waits until all are ready. */
export async function connectEach(
  h: Harness,
  servers: readonly ServerHandle[],
  clients: readonly Child[],
  targets: readonly Targets[],
  what: string,
): Promise<number> {
  const t0 = monoMs();
  const ticker = setInterval(() => {
    Promise.all(servers.map((s) => s.sessions()))
      .then((all) => h.progress(`${what}: ${all.join(' + ')} sessions on the servers`))
      .catch(() => {});
  }, 5000);
  try {
    const results = await Promise.all(
      clients.map((client, i) =>
        client.peer.call<ConnectResult>(
          'connect',
          {
            targets: targets[i]!,
            localAddress: h.freshAddress(),
            concurrency: h.plan.connectConcurrencyPerProc,
            timeoutMs: h.plan.connectTimeoutMs,
          },
          h.plan.connectTimeoutMs + 30_000,
        ),
      ),
    );
    const notReady = results.reduce((sum, r) => sum + r.notReady, 0);
    if (notReady > 0) {
      const statuses = await Promise.all(clients.map((c) => c.peer.call<ClientStatus>('status')));
      throw new Error(
        `${what}: ${notReady} sessions not ready after ${h.plan.connectTimeoutMs} ms; ` +
          `client messages: ${JSON.stringify(statuses.flatMap((s) => s.lastMessages))}`,
      );
    }
    return monoMs() - t0;
  } finally {
    clearInterval(ticker);
  }
}

/**
 * Runs `work` with every server's CPU profiled when the run was asked for profiles (--profile): one
 * `profile-<what>-<server>.cpuprofile` each in the output folder, and one per client process of
 * `clients` when given (`profile-<what>-<client>.cpuprofile`: the agents' own code). The profiler's
 * own cost lands in the figures measured meanwhile, so compare profiled runs only with each other.
 */
export async function profiled<T>(
  h: Harness,
  servers: readonly ServerHandle[],
  what: string,
  work: () => Promise<T>,
  clients: readonly Child[] = [],
): Promise<T> {
  if (!h.options.profile) return work();
  const profiledProcs = [...servers.map((s) => s.child), ...clients];
  await Promise.all(profiledProcs.map((child) => child.peer.call('cpuProfileStart')));
  try {
    return await work();
  } finally {
    await Promise.all(
      profiledProcs.map((child) =>
        child.peer.call(
          'cpuProfileStop',
          { file: join(h.outDir, `profile-${what}-${child.name}.cpuprofile`) },
          60_000,
        ),
      ),
    );
  }
}

/** Stops every sim of every client process and waits (bounded) until the servers hold none. */
export async function stopEverySession(
  servers: readonly ServerHandle[],
  clients: readonly Child[],
): Promise<void> {
  await Promise.all(clients.map((c) => c.peer.call('stopAll', { timeoutMs: 60_000 }, 70_000)));
  await pollUntil(
    'the servers to hold no session',
    async () =>
      (await Promise.all(servers.map((s) => s.stats()))).every((s) => s.sessions === 0) ? true : undefined,
    60_000,
  );
}

/** Connects and closes `targets`' sessions so one-off costs are not charged to the measured ones; the servers' settled stats. */
export async function warmUp(
  h: Harness,
  servers: readonly ServerHandle[],
  clients: readonly Child[],
  targets: readonly Targets[],
  label: string,
): Promise<ServerStats[]> {
  await connectEach(h, servers, clients, targets, `${label}: warm-up`);
  await stopEverySession(servers, clients);
  await sleep(1000);
  return Promise.all(servers.map((s) => (h.plan.quick ? s.gcStats() : s.settledStats())));
}

/**
 * Connects every enrolled connector once and closes it again, one turn of client processes after
 * the other (see measureStep), as the sessions scenario's first sessions do: a connector's first
 * session does one-off bookkeeping (its first connection recorded, its host facts reported, and on
 * PostgreSQL both sent to every other replica), so that the steps then measure the sessions a
 * server sees every day, reconnects, and this the first ones. The servers' CPU (all of them) per
 * first session.
 */
export async function firstSessions(
  h: Harness,
  servers: readonly ServerHandle[],
  clients: readonly Child[],
  turns: ReadonlyArray<readonly number[]>,
  label: string,
): Promise<{ count: number; cpuUs: number; durationMs: number }> {
  h.progress(`${label}: first session of every enrolled connector (connect once, close)`);
  const before = await Promise.all(servers.map((s) => s.stats()));
  const t0 = monoMs();
  let count = 0;
  for (const turn of turns) {
    const results = await Promise.all(turn.map((i) => connectEachOnce(h, clients[i]!)));
    const notReady = results.reduce((n, r) => n + r.notReady, 0);
    if (notReady > 0) throw new Error(`${label}: first sessions: ${notReady} did not become ready`);
    count += results.reduce((n, r) => n + r.connected, 0);
  }
  await stopEverySession(servers, clients);
  const after = await Promise.all(servers.map((s) => s.stats()));
  const cpuMs = after.reduce((n, s, i) => n + s.cpuMs - before[i]!.cpuMs, 0);
  const result = { count, cpuUs: (cpuMs * 1000) / Math.max(1, count), durationMs: monoMs() - t0 };
  h.progress(
    `${label}: ${count} first sessions in ${(result.durationMs / 1000).toFixed(1)} s, ${result.cpuUs.toFixed(0)} µs of the servers' CPU each (connect and close)`,
  );
  return result;
}

/**
 * One step: every client process to its targets (the servers' CPU per new session meanwhile), the
 * servers' memory after GC against `base`, then `revokes` one by one, each through `revokeVia` the
 * server the agent is on.
 *
 * The clients connect in `turns` (indices into `clients`), one turn after the other: the replicas'
 * turns are one replica's clients each, so that while the CPU per session is measured the machine
 * runs what it runs for the embedded baseline (one server taking sessions from its clients), plus
 * the other replicas learning of them. All three taking sessions at once on two cores charges each
 * operation more CPU time (the same signature checks cost 1.75× as much per check in a profile of
 * that), which is the machine's oversubscription, not the backend's cost per session.
 */
export async function measureStep(
  h: Harness,
  servers: readonly ServerHandle[],
  clients: readonly Child[],
  targets: readonly Targets[],
  turns: ReadonlyArray<readonly number[]>,
  perServer: number,
  base: readonly ServerStats[],
  revokeVia: (agentServer: string) => ServerHandle,
  label: string,
): Promise<ReplicaStep> {
  // Each server collects its garbage before the step and again at its end, inside the window: a
  // collection V8 put off would otherwise charge one step's garbage to the next (or to no step: the
  // embedded server's last), and the replicas' turns hold the window open three times as long.
  const idleFrom = await Promise.all(servers.map((s) => s.gcStats()));
  await sleep(IDLE_SAMPLE_MS);
  const before = await Promise.all(servers.map((s) => s.stats()));
  const idleCpuMsPerS = before.map((s, i) => ((s.cpuMs - idleFrom[i]!.cpuMs) * 1000) / IDLE_SAMPLE_MS);
  const turnCpuMs: number[][] = [];
  const turnRecords: Turn[] = [];
  const connectMs = await profiled(h, servers, `connect-${perServer}`, async () => {
    let ms = 0;
    let turnFrom = before;
    for (const [t, turn] of turns.entries()) {
      const turnStart = monoMs();
      const what = `${label}: connect to ${perServer} per server${turns.length > 1 ? ` (turn ${t + 1} of ${turns.length})` : ''}`;
      ms += await connectEach(
        h,
        servers,
        turn.map((i) => clients[i]!),
        turn.map((i) => targets[i]!),
        what,
      );
      const turnTo = await Promise.all(
        // One collection: more would charge the window a full mark of the live heap each.
        servers.map((s) => (t === turns.length - 1 ? s.gcStats(1) : s.stats())),
      );
      turnCpuMs.push(turnTo.map((s, i) => s.cpuMs - turnFrom[i]!.cpuMs));
      turnRecords.push({
        ms: monoMs() - turnStart,
        cpuMs: turnCpuMs[t]!,
        sessionsFrom: turnFrom.map((s) => s.sessions),
        sessionsTo: turnTo.map((s) => s.sessions),
      });
      turnFrom = turnTo;
    }
    return ms;
  });
  const after = await Promise.all(servers.map((s) => s.stats()));
  const newSessions = Math.max(
    1,
    after.reduce((n, s) => n + s.sessions, 0) - before.reduce((n, s) => n + s.sessions, 0),
  );
  const cpuMs = after.reduce((n, s, i) => n + s.cpuMs - before[i]!.cpuMs, 0);
  await sleep(h.plan.quick ? 500 : 5000);
  const mem = await Promise.all(servers.map((s) => (h.plan.quick ? s.gcStats() : s.settledStats())));
  const live = mem.reduce((n, s) => n + s.sessions, 0);
  // What each server spends idle holding all its sessions: with the reading before the step, the
  // line that takes the holding off each turn (lib/holding-cost.ts).
  const heldFrom = await Promise.all(servers.map((s) => s.stats()));
  await sleep(IDLE_SAMPLE_MS);
  const heldTo = await Promise.all(servers.map((s) => s.stats()));
  const heldCpuMsPerS = heldTo.map((s, i) => ((s.cpuMs - heldFrom[i]!.cpuMs) * 1000) / IDLE_SAMPLE_MS);
  const idleLines = servers.map((_, i) => ({
    before: { sessions: before[i]!.sessions, cpuMsPerS: idleCpuMsPerS[i]! },
    after: { sessions: heldTo[i]!.sessions, cpuMsPerS: heldCpuMsPerS[i]! },
  }));
  const step: ReplicaStep = {
    perServer,
    sessions: mem.map((s) => s.sessions),
    connectMs,
    handshakeCpuUs: (cpuMs * 1000) / newSessions,
    turnCpuMs,
    idleCpuMsPerS,
    heldCpuMsPerS,
    turnMs: turnRecords.map((t) => t.ms),
    marginalHandshakeCpuUs: marginalCpuUsPerSession(turnRecords, idleLines),
    rssPerSessionBytes: mem.reduce((n, s, i) => n + s.rssBytes - base[i]!.rssBytes, 0) / live,
    heapPerSessionBytes: mem.reduce((n, s, i) => n + s.heapUsedBytes - base[i]!.heapUsedBytes, 0) / live,
    maxOpenFds: Math.max(...mem.map((s) => s.openFds)),
    revoke: null,
  };
  h.progress(
    `${label}: ${step.sessions.join(' + ')} live, ${(step.rssPerSessionBytes / 1024).toFixed(1)} KB RSS and ` +
      `${(step.heapPerSessionBytes / 1024).toFixed(1)} KB heap per session, ${step.handshakeCpuUs.toFixed(0)} µs CPU per connect, ` +
      `${step.maxOpenFds} fds at most; CPU ms by turn and server ${JSON.stringify(turnCpuMs.map((t) => t.map(Math.round)))}, ` +
      `idle before ${idleCpuMsPerS.map((ms) => ms.toFixed(0)).join(' + ')} ms/s, after (all sessions held) ` +
      `${heldCpuMsPerS.map((ms) => ms.toFixed(0)).join(' + ')} ms/s; without that holding ` +
      `${step.marginalHandshakeCpuUs?.toFixed(0) ?? '-'} µs per connect`,
  );
  step.revoke = await profiled(h, servers, `revoke-${perServer}`, () =>
    revokeRound(h, servers, clients, revokeVia, label),
  );
  return step;
}

async function revokeRound(
  h: Harness,
  servers: readonly ServerHandle[],
  clients: readonly Child[],
  revokeVia: (agentServer: string) => ServerHandle,
  label: string,
): Promise<RevokeResult> {
  const count = h.plan.replicas.revokes;
  const shares = split(count, clients.length);
  const picked = await Promise.all(
    clients.map((c, i) =>
      c.peer.call<Array<{ id: string; server: string }>>('pickReadyWhere', { group: 'B', count: shares[i] }),
    ),
  );
  const victims: Array<{ client: Child; id: string; server: string }> = [];
  for (let k = 0; victims.length < count && k < count; k++)
    for (let i = 0; i < clients.length; i++) {
      const v = picked[i]![k];
      if (v) victims.push({ client: clients[i]!, ...v });
    }
  await Promise.all(servers.map((s) => s.resetEld()));
  const lagBefore = await feedLagBuckets(servers);
  const latencies: number[] = [];
  const calls: number[] = [];
  let missed = 0;
  for (const { client, id, server } of victims) {
    const via = revokeVia(server);
    const t0 = monoMs();
    const seen = client.peer.call<CloseSeen | null>(
      'awaitClose',
      { id, sinceMs: t0, timeoutMs: 10_000 },
      20_000,
    );
    await via.requireAdmin().connectors.revoke.mutate({ connectorId: id, reason: 'bench' });
    calls.push(monoMs() - t0);
    const close = await seen;
    if (close) latencies.push(close.closeAtMs - t0);
    else missed++;
  }
  const stats = await Promise.all(servers.map((s) => s.stats()));
  const lagAfter = await feedLagBuckets(servers);
  const feedLag = Object.fromEntries(
    Object.entries(lagAfter).map(([le, n]) => [le, n - (lagBefore[le] ?? 0)]),
  );
  const result: RevokeResult = {
    latencyMs: summarize(latencies),
    callMs: summarize(calls),
    missed,
    eldMaxMs: Math.max(...stats.map((s) => s.eld.maxMs)),
    ...(Object.keys(feedLag).length > 0 ? { feedLag } : {}),
  };
  const lagText = Object.keys(feedLag).length
    ? `; changes applied by the holders within ms: ${Object.entries(feedLag)
        .map(([le, n]) => `≤${le} ${n}`)
        .join(', ')}`
    : '';
  h.progress(
    `${label}: ${victims.length} revokes: close seen p50 ${result.latencyMs.p50.toFixed(1)} ms, p99 ${result.latencyMs.p99.toFixed(1)} ms` +
      `${missed ? `, ${missed} missed` : ''}${lagText}`,
  );
  return result;
}

/**
 * The servers' `connector_store_feed_lag_seconds` histograms summed, cumulative count by upper
 * bound in ms ("+Inf" last); empty for servers without it (the embedded store).
 */
async function feedLagBuckets(servers: readonly ServerHandle[]): Promise<Record<string, number>> {
  const sum: Record<string, number> = {};
  for (const server of servers) {
    const text = await fetch(`${server.url}/metrics`)
      .then((r) => (r.ok ? r.text() : ''))
      .catch(() => '');
    for (const m of text.matchAll(/^connector_store_feed_lag_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)) {
      const le = m[1] === '+Inf' ? '+Inf' : String(Number(m[1]) * 1000);
      sum[le] = (sum[le] ?? 0) + Number(m[2]);
    }
  }
  return sum;
}

/** Deletes (force) the group of `group`'s sims through `via`; waits until every one of them has closed. */
export async function deleteGroup(
  h: Harness,
  via: ServerHandle,
  servers: readonly ServerHandle[],
  clients: readonly Child[],
  group: Group,
  groupId: string,
  label: string,
  postgresPid: number | null = null,
): Promise<MassResult> {
  await Promise.all(servers.map((s) => s.resetEld()));
  const serversBefore = await Promise.all(servers.map((s) => s.stats()));
  const clientsBefore = processesCpuMs(clients.map((c) => c.pid));
  const cpu0 = cpuSnapshot(postgresPid);
  const t0 = monoMs();
  const timeoutMs = 120_000;
  const waits = clients.map((c) =>
    c.peer.call<GroupClosed>('awaitGroupClosed', { group, sinceMs: t0, timeoutMs }, timeoutMs + 10_000),
  );
  const { callMs, seen } = await profiled(
    h,
    servers,
    `mass-${group}`,
    async () => {
      await via.requireAdmin().groups.delete.mutate({ groupId, force: true });
      const callMs = monoMs() - t0;
      return { callMs, seen: await Promise.all(waits) };
    },
    clients,
  );
  const cpu1 = cpuSnapshot(postgresPid);
  const clientsAfter = processesCpuMs(clients.map((c) => c.pid));
  const stats = await Promise.all(servers.map((s) => s.stats()));
  const closed = seen.reduce((s, g) => s + g.closed, 0);
  const count = seen.reduce((s, g) => s + g.count, 0);
  const firsts = seen.filter((g) => g.closed > 0).map((g) => g.firstCloseAtMs);
  const result: MassResult = {
    count,
    closed,
    allClosedMs: Math.max(...seen.map((g) => g.lastCloseAtMs)) - t0,
    firstClosedMs: firsts.length ? Math.min(...firsts) - t0 : 0,
    callMs,
    eldMaxMs: Math.max(...stats.map((s) => s.eld.maxMs)),
    machineBusyPct:
      ((cpu1.machineBusyMs - cpu0.machineBusyMs) / Math.max(1, cpu1.machineTotalMs - cpu0.machineTotalMs)) *
      100,
    cpuMs: {
      servers: stats.map((s, i) => s.cpuMs - serversBefore[i]!.cpuMs),
      clients: clientsAfter.reduce((n, ms, i) => n + ms - clientsBefore[i]!, 0),
      postgres: postgresPid === null ? null : cpu1.treeMs - cpu0.treeMs,
    },
  };
  const cpu = result.cpuMs!;
  h.progress(
    `${label}: ${closed}/${count} closed, the last after ${result.allClosedMs.toFixed(0)} ms (call ${callMs.toFixed(0)} ms; ` +
      `machine ${result.machineBusyPct!.toFixed(0)} % busy meanwhile; CPU ms: servers ${cpu.servers.map((ms) => ms.toFixed(0)).join(' + ')}, ` +
      `clients ${cpu.clients.toFixed(0)}${cpu.postgres === null ? '' : `, PostgreSQL ${cpu.postgres.toFixed(0)}`})`,
  );
  if (closed < count) throw new Error(`${label}: only ${closed} of ${count} sessions closed`);
  return result;
}
