import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Row, SCENARIOS, type Target } from '../scripts/bench/report-row.js';
import { settleWithin, spawnProcess } from '../scripts/lib/processes.js';

// The smoke run of every phase takes ~2.5 min here (the replicas phase ~75 s of it: a PostgreSQL,
// three replicas and an embedded-store server started); on a loaded machine up to twice that.
const BOUND_MS = 360_000;

/** Runs `npm run bench -- --quick` as a user would, bounded in time; stops it (and its children) at the bound. */
async function runQuickBench(
  outDir: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const bench = spawnProcess('npm', ['run', '-s', 'bench', '--', '--quick', '--out', outDir], {
    name: 'npm run bench',
  });
  // The harness cleans up on SIGTERM: stop() gives it the chance, then the whole group goes.
  const { code } = (await settleWithin(bench.exited, BOUND_MS)) ?? (await bench.stop());
  return { code, stdout: bench.stdout(), stderr: bench.stderr() };
}

describe('npm run bench -- --quick', () => {
  it(
    'finishes within its bound, exits 0, and reports every scenario as JSON lines, a Markdown table and a chart',
    async () => {
      const outDir = await mkdtemp(join(tmpdir(), 'ce-bench-quick-'));
      try {
        const { code, stdout, stderr } = await runQuickBench(outDir);
        expect(code, `stderr:\n${stderr.slice(-4000)}`).toBe(0);

        const lines = stdout
          .split('\n')
          .filter((line) => line.startsWith('{'))
          .map((line) => JSON.parse(line) as { type: string });
        const run = lines.find((l) => l.type === 'run') as { quick?: boolean } | undefined;
        expect(run?.quick).toBe(true);
        const rows = lines.filter((l): l is Row => l.type === 'row');
        const targets = lines.filter((l): l is Target => l.type === 'target');
        expect(lines.filter((l) => l.type === 'error')).toEqual([]);
        for (const scenario of SCENARIOS) {
          expect(
            rows.some((r) => r.scenario === scenario),
            `no row for ${scenario}`,
          ).toBe(true);
        }
        for (const row of rows) {
          expect(typeof row.metric).toBe('string');
          expect(row.project === null || Number.isFinite(row.project)).toBe(true);
        }
        expect(targets.length).toBeGreaterThanOrEqual(10);
        expect(stdout).toContain('| scenario | metric | N | project | baseline(s) | ratio |');

        // The same results land in the output folder, with the chart.
        const jsonl = await readFile(join(outDir, 'results.jsonl'), 'utf8');
        expect(jsonl.trim().split('\n').length).toBe(lines.length);
        expect(await readFile(join(outDir, 'chart.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\s*$/);
      } finally {
        await rm(outDir, { recursive: true, force: true });
      }
    },
    BOUND_MS + 30_000,
  );
});
