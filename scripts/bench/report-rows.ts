import { type FleetKind, KIND_LABEL } from './protocol.js';
import { replicaRows } from './report-replicas.js';
import { fmt, KB, MB, type Row, row } from './report-row.js';
import type { AuditListResult, FleetResult, RunResults } from './results.js';

const TRPC = KIND_LABEL.trpc;
const BARE = KIND_LABEL.bare;

export function stepOf(fleet: FleetResult | undefined, n: number) {
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
