import type { FleetKind } from './protocol.js';
import { replicaTargets } from './report-replicas.js';
import { fmt, KB, MB, type Scenario, type Target } from './report-row.js';
import { eventLoopByScenario, stepOf } from './report-rows.js';
import type { RunResults } from './results.js';

/** The targets, each met or not by this run's numbers. */
export function buildTargets(results: RunResults, steps: number[]): Target[] {
  const targets: Target[] = [];
  const maxN = steps[steps.length - 1]!;
  const f = results.fleets;
  const top = (kind: FleetKind) => stepOf(f[kind], maxN);
  const add = (id: string, scenario: Scenario, text: string, measured: string, met: boolean | null) =>
    targets.push({ type: 'target', id, scenario, text, measured, met });

  const p = top('project');
  add(
    'sessions-per-process',
    'sessions',
    '19k live sessions in one server process',
    p ? `${fmt(p.n, 0)} live, ${fmt(p.openFds, 0)} fds of the 20,000 cap` : 'not measured',
    p ? p.n >= 19_000 : null,
  );
  const t = top('trpc');
  const memRatio = p && t ? p.rssPerSessionBytes / t.rssPerSessionBytes : null;
  add(
    'memory-per-session',
    'sessions',
    'memory per session ≤ 1.2× the minimal-tRPC session',
    p && t
      ? `RSS ${fmt(p.rssPerSessionBytes / KB)} KB vs ${fmt(t.rssPerSessionBytes / KB)} KB = ${fmt(memRatio, 2)}× ` +
          `(heap ${fmt(p.heapPerSessionBytes / KB)} vs ${fmt(t.heapPerSessionBytes / KB)} KB = ${fmt(p.heapPerSessionBytes / t.heapPerSessionBytes, 2)}×) at ${fmt(maxN, 0)}`
      : 'not measured',
    memRatio === null ? null : memRatio <= 1.2,
  );
  const cpuOf = (kind: FleetKind) => {
    const steps_ = f[kind]?.steps ?? [];
    const sessions = steps_.reduce((s, x) => s + x.newSessions, 0);
    return sessions ? steps_.reduce((s, x) => s + x.handshakeCpuUs * x.newSessions, 0) / sessions : null;
  };
  const cpuP = cpuOf('project');
  const cpuT = cpuOf('trpc');
  add(
    'handshake-cpu',
    'sessions',
    'handshake CPU ≤ 2× the minimal-tRPC handshake',
    cpuP !== null && cpuT !== null
      ? `${fmt(cpuP, 0)} µs vs ${fmt(cpuT, 0)} µs per connect = ${fmt(cpuP / cpuT, 2)}×`
      : 'not measured',
    cpuP !== null && cpuT !== null ? cpuP / cpuT <= 2 : null,
  );
  const rv = p?.revoke;
  add(
    'revoke-p99',
    'revoke',
    `revoke p99 ≤ 50 ms at ${fmt(maxN, 0)} connected`,
    rv
      ? `p99 ${fmt(rv.latencyMs.p99)} ms (p50 ${fmt(rv.latencyMs.p50)} ms, bare ws p99 ${fmt(top('bare')?.revoke?.latencyMs.p99)} ms)`
      : 'not measured',
    rv ? rv.latencyMs.p99 <= 50 && rv.missed === 0 : null,
  );
  const mp = f.project?.mass;
  const mt = f.trpc?.mass;
  add(
    'mass-revoke',
    'mass-revoke',
    'mass revoke of 5k ≤ 1.2× the minimal-tRPC mass close',
    mp && mt
      ? `${fmt(mp.allClosedMs, 0)} ms vs ${fmt(mt.allClosedMs, 0)} ms for ${fmt(mp.count, 0)} = ${fmt(mp.allClosedMs / mt.allClosedMs, 2)}×`
      : 'not measured',
    mp && mt ? mp.allClosedMs / mt.allClosedMs <= 1.2 : null,
  );
  const e = results.enrollment;
  add(
    'enrollment-rate',
    'enrollment',
    'durable enrollments ≥ 0.3× bare EdDSA signing rate with 10k stored',
    e
      ? `${fmt(e.perSecond, 0)}/s vs ${fmt(e.signPerSecond, 0)} signatures/s = ${fmt(e.perSecond / e.signPerSecond, 2)}× (${fmt(e.storedBefore, 0)} stored)`
      : 'not measured',
    e ? e.perSecond / e.signPerSecond >= 0.3 : null,
  );
  const s = f.project?.storm;
  add(
    'storm-back',
    'reconnect-storm',
    `${fmt(maxN, 0)} agents back within 30 s of a server kill`,
    s ? `${fmt(s.back, 0)}/${fmt(s.n, 0)} back in ${fmt(s.allBackMs / 1000)} s` : 'not measured',
    s ? s.notBack === 0 && s.allBackMs <= 30_000 : null,
  );
  add(
    'storm-none-gave-up',
    'reconnect-storm',
    'no agent gives up',
    s ? `${s.gaveUp} gave up (exit codes ${JSON.stringify(s.exitCodes)})` : 'not measured',
    s ? s.gaveUp === 0 : null,
  );
  add(
    'storm-admin',
    'reconnect-storm',
    'no admin call slower than 1 s during the storm',
    s?.admin
      ? `max ${fmt(s.admin.maxMs, 0)} ms over ${s.admin.calls} calls, ${s.admin.errors} errors`
      : 'not measured',
    s?.admin ? s.admin.maxMs <= 1000 && s.admin.errors === 0 : null,
  );
  const fp = results.footprint;
  add(
    'agent-rss',
    'agent-footprint',
    'agent idle RSS ≤ 60 MB',
    fp
      ? `${fmt(fp.agent.rssBytes / MB)} MB (max ${fmt(fp.agent.maxRssBytes / MB)} MB; ${fp.source})`
      : 'not measured',
    fp ? fp.agent.maxRssBytes <= 60 * MB : null,
  );
  add(
    'agent-cpu',
    'agent-footprint',
    'agent idle CPU < 1 %',
    fp ? `${fmt(fp.agent.cpuPct, 3)} % over ${fmt(fp.idleMs / 1000, 0)} s` : 'not measured',
    fp ? fp.agent.cpuPct < 1 : null,
  );
  const rn = results.renewal;
  add(
    'renewal-stall',
    'renewal',
    `renewing ${rn ? fmt(rn.n, 0) : 'N'} identities issued together stalls the server's event loop < 100 ms`,
    rn
      ? `max ${fmt(rn.eldMaxMs, 0)} ms; ${fmt(rn.renewed, 0)}/${fmt(rn.n, 0)} renewed over ${fmt(rn.windowMs / 1000)} s ` +
          `(issued over ${fmt(rn.enrollMs / 1000)} s, ${fmt(rn.identityTtlMs / 1000, 0)} s lifetime), CPU ${fmt(rn.cpuMs / 1000, 2)} s`
      : 'not measured',
    rn ? rn.eldMaxMs < 100 && rn.renewed === rn.n : null,
  );
  const auditRuns = results.auditList ?? [];
  const small = auditRuns[0];
  const large = auditRuns.length > 1 ? auditRuns[auditRuns.length - 1] : undefined;
  const auditRatio = small && large ? large.firstPageMs.p50 / small.firstPageMs.p50 : null;
  add(
    'audit-list',
    'audit-list',
    `audit.list first page with ${large ? fmt(large.events, 0) : '1,000,000'} events on disk within 2× of it with ${small ? fmt(small.events, 0) : '1,000'}`,
    small && large && auditRatio !== null
      ? `p50 ${fmt(large.firstPageMs.p50, 2)} ms vs ${fmt(small.firstPageMs.p50, 2)} ms = ${fmt(auditRatio, 2)}× ` +
          `(${large.files} file${large.files === 1 ? '' : 's'}, ${fmt(large.bytes / 2 ** 20, 0)} MiB)`
      : 'not measured',
    auditRatio === null ? null : auditRatio <= 2,
  );
  const stalls = eventLoopByScenario(results)
    .map(([name, v]) => [name, v.project] as const)
    .filter(([, v]) => v !== null) as Array<readonly [string, number]>;
  const worst = stalls.reduce<readonly [string, number] | null>((w, x) => (!w || x[1] > w[1] ? x : w), null);
  add(
    'event-loop',
    'event-loop',
    'no event-loop stall over 100 ms in the server during any scenario',
    worst ? stalls.map(([name, v]) => `${name} ${fmt(v, 0)} ms`).join(', ') : 'not measured',
    worst ? worst[1] <= 100 : null,
  );
  targets.push(...replicaTargets(results));
  return targets;
}
