import { fmt, type Row, type Target } from './report-row.js';
import type { RunResults } from './results.js';

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
