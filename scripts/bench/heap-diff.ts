/**
 * What a live session keeps on the heap: the difference between two heap snapshots taken by the
 * harness (--heap-snapshots) at 0 and at N sessions, by constructor, divided by N.
 *
 *   npx tsx scripts/bench/heap-diff.ts <before.heapsnapshot> <after.heapsnapshot> <sessions> [top=25]
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size and count per "type:name" (objects by constructor, closures, strings, arrays, …). */
function aggregate(file: string): Map<string, { size: number; count: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f)) as [
    number,
    number,
    number,
  ];
  const out = new Map<string, { size: number; count: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!] ?? '?';
    let name = snap.strings[snap.nodes[i + nameAt]!] ?? '?';
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '(strings)';
    if (type === 'code') name = '(compiled code)';
    if (name.length > 60) name = `${name.slice(0, 57)}…`;
    const key = `${type}:${name}`;
    const entry = out.get(key) ?? { size: 0, count: 0 };
    entry.size += snap.nodes[i + sizeAt]!;
    entry.count++;
    out.set(key, entry);
  }
  return out;
}

const [beforeFile, afterFile, sessionsArg, topArg] = process.argv.slice(2);
if (!beforeFile || !afterFile || !sessionsArg) {
  process.stderr.write('usage: heap-diff <before.heapsnapshot> <after.heapsnapshot> <sessions> [top]\n');
  process.exit(2);
}
const sessions = Number(sessionsArg);
const before = aggregate(beforeFile);
const after = aggregate(afterFile);
const rows = [...after].map(([key, a]) => {
  const b = before.get(key) ?? { size: 0, count: 0 };
  return { key, bytes: (a.size - b.size) / sessions, count: (a.count - b.count) / sessions };
});
const total = rows.reduce((s, r) => s + r.bytes, 0);
process.stdout.write(`heap growth per session: ${(total / 1024).toFixed(2)} KB (${sessions} sessions)\n\n`);
process.stdout.write('  bytes/session  objects/session  type:name\n');
for (const r of rows.sort((x, y) => y.bytes - x.bytes).slice(0, Number(topArg ?? 25)))
  process.stdout.write(
    `  ${r.bytes.toFixed(0).padStart(13)}  ${r.count.toFixed(2).padStart(15)}  ${r.key}\n`,
  );
