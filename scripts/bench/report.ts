import { round } from './lib/stats.js';
import { type FleetKind, KIND_LABEL } from './protocol.js';
import { replicaRows, replicaTargets } from './report-replicas.js';
import type { AuditListResult, FleetResult, RunResults } from './results.js';

/** The scenarios of the issue, in its order; every run reports each of them. */
export const SCENARIOS = [
  'sessions',
  'revoke',
  'mass-revoke',
  'enrollment',
  'reconnect-storm',
  'agent-footprint',
  'admin-reads',
  'audit-list',
  'renewal',
  'event-loop',
  'replicas',
] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** One JSON line: a metric for the project beside its baselines, and the ratio to the main one. */
export interface Row {
  type: 'row';
  scenario: Scenario;
  metric: string;
  n: number | null;
  unit: string;
  project: number | null;
  baselines: Record<string, number>;
  ratioTo: string | null;
  ratio: number | null;
}

export interface Target {
  type: 'target';
  id: string;
  scenario: Scenario;
  text: string;
  measured: string;
  met: boolean | null;
}

const KB = 1024;
const MB = 2 ** 20;

export function row(
  scenario: Scenario,
  metric: string,
  n: number | null,
  unit: string,
  project: number | null,
  baselines: Record<string, number | null | undefined>,
  ratioTo: string | null,
  digits = 2,
): Row {
  const clean: Record<string, number> = {};
  for (const [name, value] of Object.entries(baselines))
    if (value !== null && value !== undefined && Number.isFinite(value)) clean[name] = round(value, digits);
  const base = ratioTo ? clean[ratioTo] : undefined;
  const ratio = project !== null && base !== undefined && base !== 0 ? round(project / base, 2) : null;
  return {
    type: 'row',
    scenario,
    metric,
    n,
    unit,
    project: project === null ? null : round(project, digits),
    baselines: clean,
    ratioTo: base !== undefined ? ratioTo : null,
    ratio,
  };
}

const TRPC = KIND_LABEL.trpc;
const BARE = KIND_LABEL.bare;

function stepOf(fleet: FleetResult | undefined, n: number) {
  return fleet?.steps.find((s) => s.n === n);
}

/** Every row of the run, scenario by scenario. */
export function buildRows(results: RunResults, steps: number[]): Row[] {
  const rows: Row[] = [];
  const f = results.fleets;
  const project = f.project;
  const each = <T>(kind: FleetKind, n: number, pick: (s: NonNullable<ReturnType<typeof stepOf>>) => T) => {
    const step = stepOf(f[kind], n);
    return step ? pick(step) : null;
  };

  for (const n of steps) {
    const sessionRow = (
      metric: string,
      unit: string,
      pick: (s: NonNullable<ReturnType<typeof stepOf>>) => number,
      digits = 2,
    ) =>
      rows.push(
        row(
          'sessions',
          metric,
          n,
          unit,
          each('project', n, pick),
          { [TRPC]: each('trpc', n, pick), [BARE]: each('bare', n, pick) },
          TRPC,
          digits,
        ),
      );
    sessionRow('server RSS per session (after GC)', 'KB', (s) => s.rssPerSessionBytes / KB);
    sessionRow('server JS heap per session (after GC)', 'KB', (s) => s.heapPerSessionBytes / KB);
    sessionRow('server CPU per connect', 'µs', (s) => s.handshakeCpuUs, 0);
    sessionRow('server CPU with N idle sessions', '% of a core', (s) => s.idleCpuPct);
    sessionRow('server open files at N', 'fds', (s) => s.openFds, 0);
    sessionRow('time to connect the new sessions', 's', (s) => s.connectMs / 1000);
  }
  for (const n of steps) {
    const revokeRow = (
      metric: string,
      pick: (s: NonNullable<ReturnType<typeof stepOf>>) => number | undefined,
    ) =>
      rows.push(
        row(
          'revoke',
          metric,
          n,
          'ms',
          each('project', n, (s) => pick(s) ?? null),
          { [BARE]: each('bare', n, (s) => pick(s)), [TRPC]: each('trpc', n, (s) => pick(s)) },
          BARE,
        ),
      );
    revokeRow('call → socket closed, p50', (s) => s.revoke?.latencyMs.p50);
    revokeRow('call → socket closed, p99', (s) => s.revoke?.latencyMs.p99);
    revokeRow('call → socket closed, max', (s) => s.revoke?.latencyMs.max);
    revokeRow('the call itself, p50', (s) => s.revoke?.callMs.p50);
  }
  const mass = (kind: FleetKind) => f[kind]?.mass ?? null;
  const massN = project?.mass?.count ?? f.trpc?.mass?.count ?? null;
  rows.push(
    row(
      'mass-revoke',
      'call → last socket of the group closed',
      massN,
      'ms',
      mass('project')?.allClosedMs ?? null,
      { [TRPC]: mass('trpc')?.allClosedMs, [BARE]: mass('bare')?.allClosedMs },
      TRPC,
      1,
    ),
    row(
      'mass-revoke',
      'call → first socket closed',
      massN,
      'ms',
      mass('project')?.firstClosedMs ?? null,
      { [TRPC]: mass('trpc')?.firstClosedMs, [BARE]: mass('bare')?.firstClosedMs },
      TRPC,
      1,
    ),
  );

  const e = results.enrollment;
  if (e?.firstConnect) {
    rows.push(
      row(
        'sessions',
        'server CPU per first session of a newly enrolled connector (connect, then close)',
        e.firstConnect.count,
        'µs',
        e.firstConnect.cpuUs,
        {},
        null,
        0,
      ),
    );
  }
  if (e) {
    rows.push(
      row(
        'enrollment',
        `durable enrollments per second, ${e.concurrency} concurrent, ${e.storedBefore} stored`,
        e.count,
        '/s',
        e.perSecond,
        {
          'jose SignJWT, 1 in flight': e.signPerSecond,
          'jose SignJWT, 64 in flight': e.signPerSecondConcurrent,
        },
        'jose SignJWT, 1 in flight',
        0,
      ),
      row('enrollment', 'enrollment latency p50', e.count, 'ms', e.latencyMs.p50, {}, null),
      row('enrollment', 'enrollment latency p99', e.count, 'ms', e.latencyMs.p99, {}, null),
      row('enrollment', 'server CPU per enrollment', e.count, 'µs', e.serverCpuUsPerEnrollment, {}, null, 0),
      row(
        'enrollment',
        'store writes per 100 enrollments (group commit)',
        e.count,
        'writes',
        (e.storeWrites / Math.max(1, e.storeTransactions)) * 100,
        {},
        null,
        1,
      ),
      row(
        'enrollment',
        `all ${e.totalEnrolled} enrollments of the run (store growing from 0)`,
        e.totalEnrolled,
        '/s',
        e.setupPerSecond,
        {},
        null,
        0,
      ),
    );
  }

  const storm = (kind: FleetKind) => f[kind]?.storm ?? null;
  const stormN = storm('project')?.n ?? storm('bare')?.n ?? null;
  const stormRow = (
    metric: string,
    unit: string,
    pick: (s: NonNullable<ReturnType<typeof storm>>) => number,
    digits = 2,
  ) => {
    const value = (kind: FleetKind) => {
      const s = storm(kind);
      return s ? pick(s) : null;
    };
    rows.push(
      row(
        'reconnect-storm',
        metric,
        stormN,
        unit,
        value('project'),
        { [BARE]: value('bare'), [TRPC]: value('trpc') },
        BARE,
        digits,
      ),
    );
  };
  stormRow('kill -9 → all sessions back', 's', (s) => s.allBackMs / 1000);
  stormRow('server listening again → all back', 's', (s) => s.backAfterListenMs / 1000);
  stormRow('server restart (kill → listening)', 's', (s) => s.serverRestartMs / 1000);
  stormRow('sessions not back at the time bound', 'count', (s) => s.notBack, 0);
  stormRow('clients that gave up', 'count', (s) => s.gaveUp, 0);
  stormRow('client warnings and errors', 'count', (s) => s.warnings + s.errors, 0);
  stormRow('sockets opened by the clients', 'count', (s) => s.socketsOpened, 0);
  stormRow('restarted server peak RSS', 'MB', (s) => s.peakRssBytes / MB, 1);
  stormRow('restarted server CPU until all back', 's', (s) => s.cpuMs / 1000);
  stormRow('restarted server CPU until all back', '% of a core', (s) => s.cpuPctOfCore, 0);
  const admin = storm('project')?.admin;
  if (admin) {
    rows.push(
      row('reconnect-storm', 'admin call during the storm, p99', admin.calls, 'ms', admin.p99Ms, {}, null),
      row('reconnect-storm', 'admin call during the storm, max', admin.calls, 'ms', admin.maxMs, {}, null),
    );
  }

  const fp = results.footprint;
  if (fp) {
    rows.push(
      row(
        'agent-footprint',
        `idle RSS (${fp.source})`,
        1,
        'MB',
        fp.agent.rssBytes / MB,
        { 'node + ws': fp.baseline.rssBytes / MB },
        'node + ws',
        1,
      ),
      row(
        'agent-footprint',
        'max RSS while idle',
        1,
        'MB',
        fp.agent.maxRssBytes / MB,
        { 'node + ws': fp.baseline.maxRssBytes / MB },
        'node + ws',
        1,
      ),
      row(
        'agent-footprint',
        `idle CPU over ${Math.round(fp.idleMs / 1000)} s`,
        1,
        '% of a core',
        fp.agent.cpuPct,
        { 'node + ws': fp.baseline.cpuPct },
        'node + ws',
        3,
      ),
    );
  }

  const rn = results.renewal;
  if (rn) {
    const ttl = `${Math.round(rn.identityTtlMs / 1000)} s lifetime`;
    rows.push(
      row('renewal', `identities renewed (${ttl})`, rn.n, 'count', rn.renewed, {}, null, 0),
      row('renewal', 'enrollment of all N (identities issued)', rn.n, 's', rn.enrollMs / 1000, {}, null, 1),
      row('renewal', 'connect of all N after it', rn.n, 's', rn.connectMs / 1000, {}, null, 1),
      row(
        'renewal',
        'renewed before all were connected',
        rn.n,
        'count',
        rn.renewedBeforeConnected,
        {},
        null,
        0,
      ),
      row('renewal', 'first renewal → last renewal', rn.n, 's', rn.windowMs / 1000, {}, null, 1),
      row('renewal', 'server max event-loop delay while renewing', rn.n, 'ms', rn.eldMaxMs, {}, null, 0),
      row(
        'renewal',
        '~100 ms slices of that window with a delay over 100 ms',
        rn.n,
        'count',
        rn.slicesOver100Ms ?? null,
        {},
        null,
        0,
      ),
      row(
        'renewal',
        'server max event-loop delay, all connected → first renewal',
        rn.n,
        'ms',
        rn.eldMaxBeforeMs,
        {},
        null,
        0,
      ),
      row('renewal', 'server CPU over the renewal window', rn.n, 's', rn.cpuMs / 1000, {}, null, 2),
      row(
        'renewal',
        'server CPU per renewal',
        rn.n,
        'µs',
        (rn.cpuMs * 1000) / Math.max(1, rn.renewed),
        {},
        null,
        0,
      ),
    );
  }

  const audit = results.auditList ?? [];
  const reference = audit[0];
  for (const a of audit) {
    const label = reference ? `${fmt(reference.events, 0)} events` : '';
    const base = (pick: (x: AuditListResult) => number) =>
      reference && a !== reference ? { [label]: pick(reference) } : {};
    const ratioTo = reference && a !== reference ? label : null;
    const files = `${a.files} file${a.files === 1 ? '' : 's'}, ${fmt(a.bytes / 2 ** 20)} MiB`;
    rows.push(
      row(
        'audit-list',
        `audit.list first page (limit 100), p50; ${files}`,
        a.events,
        'ms',
        a.firstPageMs.p50,
        base((x) => x.firstPageMs.p50),
        ratioTo,
      ),
      row(
        'audit-list',
        'audit.list first page (limit 100), p99',
        a.events,
        'ms',
        a.firstPageMs.p99,
        base((x) => x.firstPageMs.p99),
        ratioTo,
      ),
      row(
        'audit-list',
        `audit.list since the 100th newest (${a.sinceCount} events), p50`,
        a.events,
        'ms',
        a.sinceMs.p50,
        base((x) => x.sinceMs.p50),
        ratioTo,
      ),
    );
  }

  for (const r of results.reads) {
    const note = r.synthetic ? ' (synthetic store)' : '';
    const calls = [
      ['connectors.list first page', r.listMs],
      ['connectors.counts', r.countsMs],
    ] as const;
    for (const [call, ms] of calls) {
      for (const p of ['p50', 'p99'] as const) {
        rows.push(
          row(
            'admin-reads',
            `${call} ${p}${note}`,
            r.stored,
            'ms',
            ms[p],
            { 'bare HTTP, same page': r.baselineMs[p] },
            'bare HTTP, same page',
          ),
        );
      }
    }
  }

  for (const [scenario, value] of eventLoopByScenario(results)) {
    rows.push(
      row(
        'event-loop',
        `max event-loop delay in the server during ${scenario}`,
        null,
        'ms',
        value.project,
        { [TRPC]: value.trpc, [BARE]: value.bare },
        TRPC,
        0,
      ),
    );
  }
  rows.push(...replicaRows(results));
  return rows;
}

type PerKind = { project: number | null; trpc: number | null; bare: number | null };

/** The largest event-loop delay each server showed in each scenario (perf_hooks, in the server). */
export function eventLoopByScenario(results: RunResults): Array<[string, PerKind]> {
  const out: Array<[string, PerKind]> = [];
  const maxOf = (values: Array<number | undefined>) => {
    const present = values.filter((v): v is number => v !== undefined);
    return present.length ? Math.max(...present) : null;
  };
  const per = (pick: (fleet: FleetResult) => Array<number | undefined>): PerKind => ({
    project: results.fleets.project ? maxOf(pick(results.fleets.project)) : null,
    trpc: results.fleets.trpc ? maxOf(pick(results.fleets.trpc)) : null,
    bare: results.fleets.bare ? maxOf(pick(results.fleets.bare)) : null,
  });
  if (results.enrollment)
    out.push(['enrollment', { project: results.enrollment.eldMaxMs, trpc: null, bare: null }]);
  if (results.enrollment?.firstConnect)
    out.push([
      'first sessions of new connectors',
      { project: results.enrollment.firstConnect.eldMaxMs, trpc: null, bare: null },
    ]);
  out.push(['sessions (connecting)', per((f) => f.steps.map((s) => s.connectEldMaxMs))]);
  out.push(['revoke', per((f) => f.steps.map((s) => s.revoke?.eldMaxMs))]);
  out.push(['mass revoke', per((f) => [f.mass?.eldMaxMs])]);
  out.push(['reconnect storm', per((f) => [f.storm?.eldMaxMs])]);
  if (results.auditList?.length)
    out.push([
      'audit list',
      { project: maxOf(results.auditList.map((a) => a.eldMaxMs)), trpc: null, bare: null },
    ]);
  if (results.renewal) out.push(['renewal', { project: results.renewal.eldMaxMs, trpc: null, bare: null }]);
  if (results.reads.length)
    out.push([
      'admin reads',
      { project: maxOf(results.reads.map((r) => r.eldMaxMs)), trpc: null, bare: null },
    ]);
  return out;
}

export const fmt = (value: number | null | undefined, digits = 1) =>
  value === null || value === undefined || !Number.isFinite(value)
    ? 'n/a'
    : value.toLocaleString('en-US', { maximumFractionDigits: digits });

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

/** The Markdown report: the table of rows per scenario, then the targets. */
export function markdown(rows: Row[], targets: Target[], results: RunResults): string {
  const m = results.meta;
  const lines: string[] = [];
  lines.push(
    `Run ${m.date} · ${m.quick ? 'QUICK (smoke sizes, numbers not meaningful)' : 'full'} · node ${m.node} · ` +
      `${m.cpus} × ${m.cpuModel} · ${m.memoryGiB} GiB · open files ${m.openFilesLimit} · commit ${m.commit} · ` +
      `server log level ${m.logLevel} · ${(m.durationMs / 60_000).toFixed(1)} min`,
    '',
    '| scenario | metric | N | project | baseline(s) | ratio |',
    '| --- | --- | ---: | ---: | --- | ---: |',
  );
  for (const r of rows) {
    const baselines = Object.entries(r.baselines)
      .map(([name, v]) => `${name}: ${fmt(v, 2)}`)
      .join(' · ');
    const ratio = r.ratio !== null ? `${fmt(r.ratio, 2)}× ${r.ratioTo}` : '';
    lines.push(
      `| ${r.scenario} | ${r.metric} (${r.unit}) | ${r.n === null ? '' : fmt(r.n, 0)} | ${fmt(r.project, 2)} | ${baselines} | ${ratio} |`,
    );
  }
  lines.push('', '| target | measured | met |', '| --- | --- | --- |');
  for (const t of targets)
    lines.push(
      `| ${t.text} | ${t.measured} | ${t.met === null ? 'not measured' : t.met ? 'yes' : '**no**'} |`,
    );
  if (results.errors.length) {
    lines.push('', 'Errors:');
    for (const e of results.errors) lines.push(`- ${e.scenario}: ${e.message.split('\n')[0]}`);
  }
  return `${lines.join('\n')}\n`;
}
