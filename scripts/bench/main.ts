/**
 * The benchmark harness: `npm run bench` (full, about 20–30 minutes on 2 cores) or
 * `npm run bench -- --quick` (a one-minute smoke run). Every scenario measures the project and a
 * baseline in the same run, on this machine, over loopback, and reports the ratio.
 *
 * Output: progress lines on stderr; on stdout JSON lines (one `run` line, then `row`, `target` and
 * `error` lines) followed by the Markdown table; the same in <out>/results.jsonl, results.md,
 * raw.json, chart.svg, with every process's log under <out>/logs.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { cleanUpNow, makeTempDir, repoRoot } from '../lib/processes.js';
import { chartSvg, replicasChartSvg } from './chart.js';
import { Harness } from './harness.js';
import { round } from './lib/stats.js';
import { makePlan } from './plan.js';
import type { FleetKind } from './protocol.js';
import { markdown } from './report.js';
import type { Target } from './report-row.js';
import { buildRows } from './report-rows.js';
import { buildTargets } from './report-targets.js';
import type { RunResults } from './results.js';
import { runSyntheticReads } from './scenarios/admin-reads.js';
import { runAgentFootprint } from './scenarios/agent-footprint.js';
import { runAuditList } from './scenarios/audit-list.js';
import { runEnrollment } from './scenarios/enrollment.js';
import { type ProjectSetup, runFleet } from './scenarios/fleet.js';
import { runRenewal } from './scenarios/renewal.js';
import { emptyReplicasResult, runReplicas } from './scenarios/replicas.js';

const PHASES = ['project', 'renewal', 'trpc', 'bare', 'reads', 'audit', 'agent', 'replicas'] as const;
type Phase = (typeof PHASES)[number];

const HELP = `npm run bench [-- options]

  --quick            one-minute smoke run (small N; numbers not meaningful)
  --out <dir>        where results and logs go (default .bench-results/<date-time>)
  --chart <file>     also write the SVG chart to <file>
  --max-n <n>        sessions at the last step (default 19500; quick 300)
  --steps <a,b,…>    the session steps (default 1000,10000,<max-n>; quick 100,<max-n>)
  --mass-n <n>       the step at which half the sessions are mass-revoked (default 10000; quick 100)
  --stored <n>       connectors stored before enrollment throughput is measured (default 10000)
  --enroll-count <n> enrollments in that measurement (default 3000; quick 150)
  --replica-n <n>    replicas phase: sessions per replica at its last step (default 19334, 3 replicas:
                     58,000 agents; quick 100); the group sizes scale with it
  --only <phases>    comma-separated subset of: ${PHASES.join(', ')}
                     (renewal: <max-n> connectors enrolled together on a server of their own with a
                     short identity lifetime, 10 ms per connector and ≥ 90 s (quick 15 s), connected,
                     until the server has renewed each identity once; audit: audit.list on a server
                     with 1,000 and 1,000,000 events on disk (quick 20,000), ~1 min; replicas: 3
                     replicas on a PostgreSQL of their own beside one embedded-store server, ~10 min)
  --profile          CPU profiles of the servers (enrollment, first sessions, connect and revoke at max N, mass revoke,
                     storm, renewal; replicas: each server's connect and revoke at each step and both mass
                     revokes) into <out>; summarise one with scripts/bench/profile-summary.ts
  --heap-snapshots   heap snapshots of the project and minimal-tRPC servers before the first session
                     and at each step, into <out>; compare two with scripts/bench/heap-diff.ts
  --log-level <lvl>  the project server's log level (default info, as deployed)
  --from <raw.json>  measure nothing: rebuild the table, JSON lines and chart from an earlier run
  --help

  env BENCH_SERVER_NODE_ARGS  node flags for every server under test, space-separated (e.g.
                     "--trace-gc --trace-gc-nvp": each collection in the server's log under <out>/logs)
`;

function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      chart: { type: 'string' },
      'max-n': { type: 'string' },
      steps: { type: 'string' },
      'mass-n': { type: 'string' },
      stored: { type: 'string' },
      'enroll-count': { type: 'string' },
      'replica-n': { type: 'string' },
      only: { type: 'string' },
      profile: { type: 'boolean', default: false },
      'heap-snapshots': { type: 'boolean', default: false },
      'log-level': { type: 'string', default: 'info' },
      from: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return Promise.resolve(0);
  }
  if (values.from) {
    const results = JSON.parse(readFileSync(values.from, 'utf8')) as RunResults;
    const out = resolve(values.out ?? dirname(values.from));
    mkdirSync(out, { recursive: true });
    report(results, out, values.chart ? resolve(values.chart) : null);
    return Promise.resolve(results.errors.length ? 1 : 0);
  }
  const phases = new Set<Phase>(
    values.only ? (values.only.split(',').map((p) => p.trim()) as Phase[]) : [...PHASES],
  );
  for (const phase of phases)
    if (!PHASES.includes(phase)) throw new TypeError(`--only: unknown phase ${phase}`);
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const plan = makePlan({
    quick: values.quick,
    maxN: num(values['max-n']),
    steps: values.steps ? values.steps.split(',').map(Number) : undefined,
    massN: num(values['mass-n']),
    stored: num(values.stored),
    enrollCount: num(values['enroll-count']),
    replicaN: num(values['replica-n']),
  });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const outDir = resolve(values.out ?? join(repoRoot, '.bench-results', stamp));
  const logDir = join(outDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const h = new Harness(plan, outDir, logDir, {
    profile: values.profile,
    heapSnapshots: values['heap-snapshots'],
    logLevel: values['log-level'],
  });
  return run(h, phases, values.chart ? resolve(values.chart) : null);
}

function commandOutput(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return 'unknown';
  }
}

async function run(h: Harness, phases: Set<Phase>, chartFile: string | null): Promise<number> {
  const { plan } = h;
  const dirty = commandOutput('git', ['status', '--porcelain']) ? '+local changes' : '';
  const results: RunResults = {
    meta: {
      date: new Date().toISOString(),
      quick: plan.quick,
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      memoryGiB: round(totalmem() / 2 ** 30, 1),
      openFilesLimit: commandOutput('sh', ['-c', 'ulimit -n']),
      loadAverageAtStart: loadavg().map((l) => round(l, 2)),
      command: `${process.env.BENCH_SERVER_NODE_ARGS ? `BENCH_SERVER_NODE_ARGS='${process.env.BENCH_SERVER_NODE_ARGS}' ` : ''}npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
      commit: `${commandOutput('git', ['rev-parse', '--short', 'HEAD'])}${dirty}`,
      logLevel: h.options.logLevel,
      durationMs: 0,
    },
    enrollment: null,
    reads: [],
    fleets: {},
    footprint: null,
    renewal: null,
    auditList: [],
    replicas: null,
    errors: [],
  };
  h.progress(
    `bench ${plan.quick ? 'QUICK' : 'full'} run: phases ${[...phases].join(', ')}; steps ${plan.steps.join(', ')}` +
      `${phases.has('replicas') ? `, per replica ${plan.replicas.steps.join(', ')}` : ''}; out ${h.outDir}; ` +
      `load average ${results.meta.loadAverageAtStart.join(' ')}`,
  );
  if (Number(results.meta.openFilesLimit) < plan.steps[plan.steps.length - 1]! + 200)
    h.progress(`warning: open files limit ${results.meta.openFilesLimit} is below the largest step`);

  // The hard bound: whatever hangs, the run ends and cleans up.
  setTimeout(() => {
    h.progress(`the run passed its hard time bound (${plan.deadlineMs / 1000} s + 60 s); stopping`);
    cleanUpNow();
    process.exit(1);
  }, plan.deadlineMs + 60_000).unref();

  const attempt = async (scenario: string, body: () => Promise<void>) => {
    try {
      h.checkDeadline();
      await body();
    } catch (error) {
      const message = (error as Error)?.stack ?? String(error);
      results.errors.push({ scenario, message });
      h.progress(`ERROR in ${scenario}: ${message}`);
    }
  };

  let projectDataDir: string | null = null;
  if (phases.has('project')) {
    projectDataDir = makeTempDir('bench-project-');
    let setup: ProjectSetup | null = null;
    await attempt('enrollment', async () => {
      const out = await runEnrollment(h, projectDataDir!);
      setup = out.setup;
      results.enrollment = out.enrollment;
      results.reads.push(...out.reads);
    });
    if (setup) {
      const ready: ProjectSetup = setup;
      await attempt('fleet:project', async () => {
        results.fleets.project = await runFleet(h, 'project', ready);
      });
    }
  }
  if (phases.has('renewal')) {
    await attempt('renewal', async () => {
      results.renewal = await runRenewal(h);
    });
  }
  for (const kind of ['trpc', 'bare'] as const satisfies FleetKind[]) {
    if (!phases.has(kind)) continue;
    await attempt(`fleet:${kind}`, async () => {
      results.fleets[kind] = await runFleet(h, kind, null);
    });
  }
  if (phases.has('reads') && projectDataDir) {
    const source = projectDataDir;
    for (const stored of plan.readsStored) {
      if (results.reads.some((r) => r.stored === stored && !r.synthetic)) continue;
      await attempt(`admin-reads:${stored}`, async () => {
        results.reads.push(await runSyntheticReads(h, source, stored));
      });
    }
  }
  if (phases.has('audit')) {
    await attempt('audit-list', async () => {
      results.auditList = await runAuditList(h, plan.auditEvents);
    });
  }
  if (phases.has('agent')) {
    await attempt('agent-footprint', async () => {
      results.footprint = await runAgentFootprint(h);
    });
  }
  if (phases.has('replicas')) {
    await attempt('replicas', async () => {
      const t0 = h.elapsedMs();
      results.replicas = emptyReplicasResult(plan.replicas.count);
      await runReplicas(h, results.replicas);
      h.progress(`replicas phase: ${((h.elapsedMs() - t0) / 60_000).toFixed(1)} min`);
    });
  }
  results.meta.durationMs = h.elapsedMs();

  const targets = report(results, h.outDir, chartFile);
  h.progress(
    `done in ${(results.meta.durationMs / 60_000).toFixed(1)} min: ${targets.filter((t) => t.met).length}/${targets.length} targets met, ` +
      `${results.errors.length} errors; results in ${h.outDir}`,
  );
  return results.errors.length ? 1 : 0;
}

/** The steps a run measured, from its results (for a report rebuilt with --from). */
function stepsOf(results: RunResults): number[] {
  const steps = new Set<number>();
  for (const fleet of Object.values(results.fleets)) for (const step of fleet?.steps ?? []) steps.add(step.n);
  return [...steps].sort((a, b) => a - b);
}

/** Writes results.jsonl, results.md, raw.json and chart.svg into `outDir` and prints the first two. */
function report(results: RunResults, outDir: string, chartFile: string | null): Target[] {
  const steps = stepsOf(results);
  const rows = buildRows(results, steps);
  const targets = buildTargets(results, steps);
  const jsonLines = [
    JSON.stringify({ type: 'run', ...results.meta }),
    ...rows.map((r) => JSON.stringify(r)),
    ...targets.map((t) => JSON.stringify(t)),
    ...results.errors.map((e) => JSON.stringify({ type: 'error', ...e })),
  ];
  const table = markdown(rows, targets, results);
  writeFileSync(join(outDir, 'results.jsonl'), `${jsonLines.join('\n')}\n`);
  writeFileSync(join(outDir, 'results.md'), table);
  writeFileSync(join(outDir, 'raw.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(outDir, 'chart.svg'), chartSvg(results, steps));
  if (chartFile) copyFileSync(join(outDir, 'chart.svg'), chartFile);
  if (results.replicas) {
    // The replicas' chart goes beside the main one: <chart>-replicas.svg.
    writeFileSync(join(outDir, 'chart-replicas.svg'), replicasChartSvg(results));
    if (chartFile)
      copyFileSync(join(outDir, 'chart-replicas.svg'), chartFile.replace(/(\.svg)?$/, '-replicas.svg'));
  }
  process.stdout.write(`${jsonLines.join('\n')}\n\n${table}`);
  return targets;
}

// A reader that goes away (`| head`) must not crash the run half-way and leave children behind.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping every child process\n`);
    cleanUpNow();
    process.exit(130);
  });
}

main().then(
  (code) => {
    cleanUpNow();
    process.exit(code);
  },
  (error) => {
    process.stderr.write(`bench failed: ${(error as Error)?.stack ?? error}\n`);
    cleanUpNow();
    process.exit(1);
  },
);
