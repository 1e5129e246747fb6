import type { FleetKind } from './protocol.js';
import { KIND_LABEL } from './protocol.js';
import type { RunResults } from './results.js';

interface Series {
  label: string;
  color: string;
  dashed: boolean;
  points: Array<[number, number]>;
}

const COLORS: Record<FleetKind, string> = { project: '#d62728', trpc: '#1f77b4', bare: '#7f7f7f' };
const KINDS: FleetKind[] = ['project', 'trpc', 'bare'];

const esc = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}

/** One panel: x = N (linear), y linear from 0 or logarithmic. */
function panel(
  x0: number,
  title: string,
  yLabel: string,
  series: Series[],
  xTicks: number[],
  log: boolean,
  guide: { value: number; label: string } | null = null,
  xLabel = 'N live sessions',
): string {
  const w = 440;
  const h = 300;
  const left = x0 + 60;
  const top = 50;
  const right = x0 + w - 10;
  const bottom = top + h - 60;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series
    .flatMap((s) => s.points.map((p) => p[1]))
    .concat(guide ? [guide.value] : [])
    .filter((v) => Number.isFinite(v));
  const xMax = Math.max(1, ...xs, ...xTicks);
  let yTicks: number[];
  let yOf: (v: number) => number;
  if (log) {
    const lo = 10 ** Math.floor(Math.log10(Math.max(0.01, Math.min(...ys.filter((v) => v > 0), 1))));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(lo * 10, ...ys)));
    yTicks = [];
    for (let v = lo; v <= hi * 1.0001; v *= 10) yTicks.push(v);
    yOf = (v) =>
      bottom -
      ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (bottom - top);
  } else {
    // Linear from 0; a value below 0 (RSS noise at small N) is drawn at the axis, not off the chart.
    const yMax = niceMax(Math.max(...ys, 0) * 1.05);
    yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * yMax);
    yOf = (v) => bottom - (Math.max(0, v) / yMax) * (bottom - top);
  }
  const xOf = (v: number) => left + (v / xMax) * (right - left);
  const parts: string[] = [];
  parts.push(`<text x="${x0 + w / 2}" y="25" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  parts.push(
    `<text x="${x0 + 14}" y="${(top + bottom) / 2}" text-anchor="middle" transform="rotate(-90 ${x0 + 14} ${(top + bottom) / 2})">${esc(yLabel)}</text>`,
  );
  for (const v of yTicks) {
    const y = yOf(v);
    parts.push(`<line x1="${left}" y1="${y}" x2="${right}" y2="${y}" stroke="#e5e5e5"/>`);
    const text = v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(v % 1 ? 1 : 0) : v.toString();
    parts.push(`<text x="${left - 6}" y="${y + 4}" text-anchor="end">${text}</text>`);
  }
  for (const v of xTicks) {
    const x = xOf(v);
    parts.push(`<line x1="${x}" y1="${bottom}" x2="${x}" y2="${bottom + 5}" stroke="#333"/>`);
    parts.push(`<text x="${x}" y="${bottom + 18}" text-anchor="middle">${v.toLocaleString('en-US')}</text>`);
  }
  parts.push(`<line x1="${left}" y1="${bottom}" x2="${right}" y2="${bottom}" stroke="#333"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${bottom}" stroke="#333"/>`);
  parts.push(`<text x="${(left + right) / 2}" y="${bottom + 36}" text-anchor="middle">${esc(xLabel)}</text>`);
  if (guide) {
    const y = yOf(guide.value);
    parts.push(
      `<line x1="${left}" y1="${y}" x2="${right}" y2="${y}" stroke="#2ca02c" stroke-dasharray="2 3"/>`,
    );
    parts.push(
      `<text x="${right - 4}" y="${y - 4}" text-anchor="end" fill="#2ca02c">${esc(guide.label)}</text>`,
    );
  }
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length === 0) return;
    const d = pts.map((p, k) => `${k ? 'L' : 'M'}${xOf(p[0]).toFixed(1)},${yOf(p[1]).toFixed(1)}`).join(' ');
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    for (const p of pts)
      parts.push(
        `<circle cx="${xOf(p[0]).toFixed(1)}" cy="${yOf(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`,
      );
    const ly = bottom + 52 + Math.floor(i / 2) * 16;
    const lx = left + (i % 2) * 190;
    parts.push(
      `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${dash}/>`,
    );
    parts.push(`<text x="${lx + 28}" y="${ly}">${esc(s.label)}</text>`);
  });
  return parts.join('\n');
}

/** The SVG chart: server memory per session and revoke latency against N, project beside its floors. */
export function chartSvg(results: RunResults, steps: number[]): string {
  const memory: Series[] = [];
  const revoke: Series[] = [];
  for (const kind of KINDS) {
    const fleet = results.fleets[kind];
    if (!fleet) continue;
    memory.push(
      {
        label: `${KIND_LABEL[kind]} RSS`,
        color: COLORS[kind],
        dashed: false,
        points: fleet.steps.map((s) => [s.n, s.rssPerSessionBytes / 1024]),
      },
      {
        label: `${KIND_LABEL[kind]} JS heap`,
        color: COLORS[kind],
        dashed: true,
        points: fleet.steps.map((s) => [s.n, s.heapPerSessionBytes / 1024]),
      },
    );
    revoke.push(
      {
        label: `${KIND_LABEL[kind]} p50`,
        color: COLORS[kind],
        dashed: false,
        points: fleet.steps.filter((s) => s.revoke).map((s) => [s.n, s.revoke!.latencyMs.p50]),
      },
      {
        label: `${KIND_LABEL[kind]} p99`,
        color: COLORS[kind],
        dashed: true,
        points: fleet.steps.filter((s) => s.revoke).map((s) => [s.n, s.revoke!.latencyMs.p99]),
      },
    );
  }
  const width = 900;
  const height = 400;
  const note = `${results.meta.date} · ${results.meta.cpus} cores · node ${results.meta.node}${results.meta.quick ? ' · QUICK run' : ''}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    panel(0, 'Server memory per live session (after GC)', 'KB per session', memory, steps, false),
    panel(450, 'Revoke: call → agent sees its socket close', 'ms (log scale)', revoke, steps, true, {
      value: 50,
      label: 'target p99 50 ms',
    }),
    `<text x="${width - 8}" y="${height - 6}" text-anchor="end" fill="#666">${esc(note)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

/**
 * The replicas phase's chart, in the same form: memory per session and revoke latency against the
 * sessions each server holds, the replicas on PostgreSQL beside the one embedded-store server.
 */
export function replicasChartSvg(results: RunResults): string {
  const r = results.replicas;
  const memory: Series[] = [];
  const revoke: Series[] = [];
  const sides = [
    { label: `${r?.replicas ?? 3} replicas on PostgreSQL`, steps: r?.postgres ?? [], color: COLORS.project },
    { label: 'embedded store, one server', steps: r?.embedded ?? [], color: COLORS.trpc },
  ];
  for (const side of sides) {
    memory.push(
      {
        label: `${side.label}: RSS`,
        color: side.color,
        dashed: false,
        points: side.steps.map((s) => [s.perServer, s.rssPerSessionBytes / 1024]),
      },
      {
        label: `${side.label}: JS heap`,
        color: side.color,
        dashed: true,
        points: side.steps.map((s) => [s.perServer, s.heapPerSessionBytes / 1024]),
      },
    );
    const withRevoke = side.steps.filter((s) => s.revoke);
    revoke.push(
      {
        label: `${side.label}: p50`,
        color: side.color,
        dashed: false,
        points: withRevoke.map((s) => [s.perServer, s.revoke!.latencyMs.p50]),
      },
      {
        label: `${side.label}: p99`,
        color: side.color,
        dashed: true,
        points: withRevoke.map((s) => [s.perServer, s.revoke!.latencyMs.p99]),
      },
    );
  }
  const steps = [...new Set(sides.flatMap((s) => s.steps.map((x) => x.perServer)))].sort((a, b) => a - b);
  const width = 900;
  const height = 420;
  const total = (r?.postgres.at(-1)?.sessions ?? []).reduce((n, s) => n + s, 0);
  const note = `${results.meta.date} · ${results.meta.cpus} cores · node ${results.meta.node} · ${total.toLocaleString('en-US')} agents at the last step${results.meta.quick ? ' · QUICK run' : ''}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    panel(
      0,
      'Replicas: server memory per live session (after GC)',
      'KB per session',
      memory,
      steps,
      false,
      null,
      'live sessions per server',
    ),
    panel(
      450,
      'Revoke through another replica → agent sees its close',
      'ms (log scale)',
      revoke,
      steps,
      true,
      { value: 50, label: 'target p99 50 ms' },
      'live sessions per server',
    ),
    `<text x="${width - 8}" y="${height - 6}" text-anchor="end" fill="#666">${esc(note)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
