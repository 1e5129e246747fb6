import { readdir, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { AuditEvent } from '../services/audit.js';

/**
 * Every event of an audit log, oldest first: its rotated files `<file>.<n>` beside it (the highest
 * n oldest), then the file itself. Lines torn by a crash are skipped. `files` lists what was read;
 * none found gives no events and no files.
 */
export async function readAuditEvents(file: string): Promise<{ events: AuditEvent[]; files: string[] }> {
  const dir = dirname(file);
  const prefix = `${basename(file)}.`;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { events: [], files: [] };
    throw error;
  }
  const rotated = names
    .filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
    .map((name) => ({ name, n: Number(name.slice(prefix.length)) }))
    .sort((a, b) => b.n - a.n)
    .map(({ name }) => join(dir, name));
  const files = [...rotated, ...(names.includes(basename(file)) ? [file] : [])];
  const events: AuditEvent[] = [];
  for (const path of files) {
    for (const line of (await readFile(path, 'utf8')).split('\n')) {
      if (!line) continue;
      try {
        events.push(JSON.parse(line) as AuditEvent);
      } catch {
        // A line torn by a crash mid-append: the rest of the log is intact.
      }
    }
  }
  return { events, files };
}
