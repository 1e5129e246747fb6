import Table from 'cli-table3';
import { escapeUnsafe } from '../../shared/text.js';

/**
 * A cell as text, control and invisible characters written as `\u{2060}`: names stored before such
 * characters were refused would otherwise look blank, or like another, and could drive the terminal.
 */
const show = (value: string | number | boolean | null | undefined) =>
  value === null || value === undefined ? '-' : escapeUnsafe(String(value));

/** Prints rows as a readable table (or a note when there are none). */
export function printTable(
  headers: string[],
  rows: Array<Array<string | number | null | undefined>>,
  empty = '(none)',
): void {
  if (rows.length === 0) {
    console.log(empty);
    return;
  }
  const table = new Table({
    head: headers,
    style: { head: [], border: [], compact: true },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const row of rows) table.push(row.map(show));
  console.log(table.toString());
}

/** Prints `label: value` pairs aligned, for one object. */
export function printFields(
  fields: Array<[string, string | number | boolean | null | undefined]>,
  out = console.log,
): void {
  const width = Math.max(...fields.map(([label]) => label.length));
  for (const [label, value] of fields) out(`${`${label}:`.padEnd(width + 2)}${show(value)}`);
}

/** "in 13 days", "3 hours ago": how far a time is from now, for people. */
export function relative(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const delta = Date.parse(iso) - now;
  const abs = Math.abs(delta);
  const units: Array<[number, string]> = [
    [86_400_000, 'day'],
    [3_600_000, 'hour'],
    [60_000, 'minute'],
    [1000, 'second'],
  ];
  const [size, name] = units.find(([size]) => abs >= size) ?? [1000, 'second'];
  const n = Math.round(abs / size);
  const text = `${n} ${name}${n === 1 ? '' : 's'}`;
  return delta >= 0 ? `in ${text}` : `${text} ago`;
}

/**
 * A connector's last replaced session in words, or null if none was: a newer session with the same
 * identity taking over is what a cloned host or a leaked identity file looks like.
 */
export function replacementWords(
  c: { lastReplacedAt: string | null; replacedFrom: string | null },
  now = Date.now(),
): string | null {
  if (!c.lastReplacedAt) return null;
  return `${relative(c.lastReplacedAt, now)}, the session from ${c.replacedFrom ?? 'an unknown address'}: another host may hold this identity`;
}

export { terminationWords } from '../../shared/termination-words.js';

/** A replica's id as the tables show it: its first 8 characters, as `replicas` lists them. */
export const shortReplicaId = (id: string) => id.slice(0, 8);
