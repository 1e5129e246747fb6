/**
 * Summarises a .cpuprofile written by the harness (--profile): self time by function and by
 * package/folder, idle and GC apart.
 *
 *   npx tsx scripts/bench/profile-summary.ts <file.cpuprofile> [top=25]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: profile-summary <file.cpuprofile> [top]\n');
  process.exit(2);
}
const top = Number(topArg ?? 25);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => {
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});

const area = (url: string, name: string): string => {
  if (name === '(idle)' || name === '(program)' || name === '(garbage collector)') return name;
  if (!url) return '(native / builtin)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return 'node internals';
  const repo = /\/(server|agent|shared|scripts)\/([^/]+)/.exec(url);
  if (repo) return `${repo[1]}/${repo[2]}`;
  return url;
};
const fns = new Map<string, number>();
const areas = new Map<string, number>();
let total = 0;
for (const [id, us] of selfUs) {
  const node = byId.get(id)!;
  const { functionName, url, lineNumber } = node.callFrame;
  const key = `${functionName || '(anonymous)'} ${url.replace(/^.*\/(node_modules|server|agent|shared|scripts)\//, '$1/')}:${lineNumber + 1}`;
  fns.set(key, (fns.get(key) ?? 0) + us);
  const a = area(url, functionName);
  areas.set(a, (areas.get(a) ?? 0) + us);
  total += us;
}
const busy = total - (areas.get('(idle)') ?? 0);
const pct = (us: number, of: number) => `${((us / of) * 100).toFixed(1).padStart(5)} %`;
process.stdout.write(
  `${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (percentages of busy time)\n\nby area:\n`,
);
for (const [name, us] of [...areas].sort((a, b) => b[1] - a[1]).slice(0, top))
  if (name !== '(idle)')
    process.stdout.write(`  ${pct(us, busy)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${name}\n`);
process.stdout.write('\nby function (self time):\n');
for (const [name, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top + 1))
  if (!name.startsWith('(idle)'))
    process.stdout.write(`  ${pct(us, busy)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${name}\n`);
