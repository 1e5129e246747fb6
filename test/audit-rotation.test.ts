import { appendFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { type AuditEvent, FileAuditLog } from '../server/services/audit.js';
import { listAuditEvents, readAuditEvents, rotateAuditFiles } from '../server/store/audit-files.js';
import { tempDir } from './helpers/server.js';

const actor = { kind: 'system' } as const;
const SECOND = 1000;

/** The audit files in `dir`, by name, each with its events' `n` in file order. */
async function filesIn(dir: string): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const name of (await readdir(dir)).sort()) {
    if (!name.startsWith('audit.jsonl')) continue;
    const text = await readFile(join(dir, name), 'utf8');
    out[name] = text
      .split('\n')
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as AuditEvent).details.n as number);
  }
  return out;
}

async function collect(events: AsyncIterable<AuditEvent>): Promise<AuditEvent[]> {
  const out: AuditEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

/** A log of `count` events, one a second, rotated every ~4 events (each line is ~250 bytes). */
async function filledLog(count: number, options: { keep?: number; maxBytes?: number } = {}) {
  const dir = await tempDir('ce-audit-rot-');
  const file = join(dir, 'audit.jsonl');
  const clock = new ManualClock(Date.parse('2026-03-01T00:00:00Z'));
  const log = await FileAuditLog.open(file, clock, {
    maxBytes: options.maxBytes ?? 1000,
    keep: options.keep ?? 3,
  });
  const recorded: AuditEvent[] = [];
  for (let n = 0; n < count; n++) {
    recorded.push(await log.record({ type: 'test.event', actor, details: { n } }));
    clock.advance(SECOND);
  }
  // A rotation may still run after the last write was acknowledged: list() waits for it.
  await log.list({ limit: 1 });
  return { dir, file, clock, log, recorded };
}

describe('audit log rotation by size', () => {
  it('keeps the newest N rotated files (mode 0600), every event in exactly one of them, and lists across them newest first with no loss or duplicate', async () => {
    const { dir, file, log, recorded } = await filledLog(60, { keep: 3 });
    try {
      const files = await filesIn(dir);
      expect(Object.keys(files)).toEqual(['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2', 'audit.jsonl.3']);
      for (const name of Object.keys(files)) expect((await stat(join(dir, name))).mode & 0o777).toBe(0o600);
      // Oldest file first, then the newest: one unbroken run ending at the last event recorded.
      const kept = [
        ...files['audit.jsonl.3']!,
        ...files['audit.jsonl.2']!,
        ...files['audit.jsonl.1']!,
        ...files['audit.jsonl']!,
      ];
      const first = kept[0]!;
      expect(kept).toEqual(recorded.slice(first).map((e) => e.details.n));
      expect(first).toBeGreaterThan(30);
      for (const name of ['audit.jsonl.1', 'audit.jsonl.2', 'audit.jsonl.3'])
        expect((await stat(join(dir, name))).size).toBeGreaterThanOrEqual(1000);

      const newestFirst = recorded.slice(first).reverse();
      expect((await log.list({ limit: 10_000 })).map((e) => e.id)).toEqual(newestFirst.map((e) => e.id));
      // Paging with `before` walks the same events, page by page, across the files.
      const paged: string[] = [];
      let before: string | undefined;
      for (let i = 0; i < 100; i++) {
        const page = await log.list({ limit: 7, ...(before ? { before } : {}) });
        paged.push(...page.map((e) => e.id));
        if (page.length < 7) break;
        before = page.at(-1)!.id;
      }
      expect(paged).toEqual(newestFirst.map((e) => e.id));
      // A cursor whose event was rotated away: nothing older is left.
      expect(await log.list({ before: recorded[0]!.id })).toEqual([]);

      // The exported reader: oldest first over the same files; `after` is exclusive, `since` inclusive.
      expect((await collect(readAuditEvents(file))).map((e) => e.id)).toEqual(
        recorded.slice(first).map((e) => e.id),
      );
      const pivot = recorded[50]!;
      expect((await collect(readAuditEvents(file, { after: pivot.at }))).map((e) => e.details.n)).toEqual([
        51, 52, 53, 54, 55, 56, 57, 58, 59,
      ]);
      expect((await collect(readAuditEvents(file, { since: pivot.at }))).map((e) => e.details.n)[0]).toBe(50);
    } finally {
      await log.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('`since` reads only the newest files: an unreadable older file is never touched, and the bytes read stay near the page', async () => {
    const { dir, file, log, recorded } = await filledLog(60, { keep: 8 });
    try {
      // The oldest rotated file becomes a folder: any read of it fails (EISDIR).
      const oldest = join(dir, 'audit.jsonl.8');
      await rm(oldest);
      await mkdir(oldest);
      await expect(log.list({ since: recorded[0]!.at, limit: 10_000 })).rejects.toMatchObject({
        code: 'EISDIR',
      });
      await expect(collect(readAuditEvents(file))).rejects.toMatchObject({ code: 'EISDIR' });

      let bytesRead = 0;
      const read = { chunkBytes: 256, onRead: (bytes: number) => (bytesRead += bytes) };
      const since = recorded[54]!.at;
      const page = await listAuditEvents(file, { since, limit: 10_000 }, read);
      expect(page.map((e) => e.details.n)).toEqual([59, 58, 57, 56, 55, 54]);
      // What it must read: the lines from event 53 (the first too old, where it stops) to the end,
      // plus at most one chunk more in each of the (up to 3) files they sit in.
      const lineBytes = (from: number) =>
        recorded.slice(from).reduce((sum, e) => sum + Buffer.byteLength(JSON.stringify(e)) + 1, 0);
      const total = (await Promise.all((await readdir(dir)).map((n) => stat(join(dir, n))))).reduce(
        (sum, s) => sum + (s.isFile() ? s.size : 0),
        0,
      );
      expect(lineBytes(53) + 3 * 256).toBeLessThan(total / 2);
      expect(bytesRead).toBeLessThanOrEqual(lineBytes(53) + 3 * 256);
      // A first page without `since` stops at its limit, reading about what it returns.
      bytesRead = 0;
      expect((await listAuditEvents(file, { limit: 2 }, read)).map((e) => e.details.n)).toEqual([59, 58]);
      expect(bytesRead).toBeLessThanOrEqual(3 * 256);
      // The oldest-first reader starts at the first file that holds an event after the bound.
      bytesRead = 0;
      const after = await collect(readAuditEvents(file, { after: recorded[56]!.at }, read));
      expect(after.map((e) => e.details.n)).toEqual([57, 58, 59]);
      expect(bytesRead).toBeLessThanOrEqual(2 * lineBytes(53) + 3 * 256);
    } finally {
      await log.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a torn last line (a crash mid-append) is skipped by every reader, in the current file or a rotated one, and the log goes on after it', async () => {
    const { dir, file, log, clock, recorded } = await filledLog(10, { keep: 5 });
    await log.close();
    try {
      await appendFile(join(dir, 'audit.jsonl.1'), '{"id":"evt_torn1","at":"2026-');
      await appendFile(file, '{"id":"evt_torn2","at":"2026-03-01T00:');
      const all = recorded.map((e) => e.id);
      expect((await listAuditEvents(file, { limit: 100 })).map((e) => e.id)).toEqual([...all].reverse());
      expect((await collect(readAuditEvents(file))).map((e) => e.id)).toEqual(all);

      const again = await FileAuditLog.open(file, clock, { maxBytes: 1000, keep: 5 });
      const next = await again.record({ type: 'test.after', actor });
      expect((await again.list({ limit: 100 })).map((e) => e.id)).toEqual([next.id, ...[...all].reverse()]);
      await again.close();
      const lines = (await readFile(file, 'utf8')).split('\n').filter(Boolean);
      expect(lines.at(-2)).toBe('{"id":"evt_torn2","at":"2026-03-01T00:');
      expect(JSON.parse(lines.at(-1)!).id).toBe(next.id);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a crash between two renames of a rotation leaves a readable set in order; the next rotation and a missing current file carry on', async () => {
    const dir = await tempDir('ce-audit-crash-');
    const file = join(dir, 'audit.jsonl');
    const line = (n: number) =>
      `${JSON.stringify({ id: `evt_${n}`, at: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(), type: 'test.event', actor, details: { n } })}\n`;
    try {
      // As left by a crash after `.2 -> .3` and before `.1 -> .2`: a gap at 2.
      await writeFile(join(dir, 'audit.jsonl.3'), line(0) + line(1));
      await writeFile(join(dir, 'audit.jsonl.1'), line(2) + line(3));
      await writeFile(file, line(4));
      const ns = async () => (await collect(readAuditEvents(file))).map((e) => e.details.n);
      expect(await ns()).toEqual([0, 1, 2, 3, 4]);
      await rotateAuditFiles(file, 3);
      expect(await filesIn(dir)).toEqual({ 'audit.jsonl.1': [4], 'audit.jsonl.2': [2, 3] });
      // A crash after the current file was moved and before a new one was made: open() makes it.
      const clock = new ManualClock(Date.UTC(2026, 0, 1, 0, 0, 10));
      const log = await FileAuditLog.open(file, clock, { maxBytes: 1000, keep: 3 });
      await log.record({ type: 'test.event', actor, details: { n: 10 } });
      expect((await log.list({ limit: 100 })).map((e) => e.details.n)).toEqual([10, 4, 3, 2]);
      await log.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a rotation that happens while list() reads: the listing is read again, with no event twice or missed', async () => {
    const dir = await tempDir('ce-audit-mid-');
    const file = join(dir, 'audit.jsonl');
    let midway: (() => Promise<unknown>) | null = null;
    const log = await FileAuditLog.open(file, new ManualClock(), {
      maxBytes: 1,
      keep: 100,
      read: { chunkBytes: 64, onRead: () => midway?.() },
    });
    try {
      for (let n = 0; n < 6; n++) await log.record({ type: 'test.event', actor, details: { n } });
      // On the list's first read, two more events: each write is followed by a rotation.
      midway = async () => {
        midway = null;
        await log.record({ type: 'test.event', actor, details: { n: 6 } });
        await log.record({ type: 'test.event', actor, details: { n: 7 } });
      };
      const listed = (await log.list({ limit: 100 })).map((e) => e.details.n);
      expect(listed).toEqual([7, 6, 5, 4, 3, 2, 1, 0]);
    } finally {
      await log.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('lists taken while events are recorded and files rotate each see one unbroken run of the log, newest first', async () => {
    const { dir, file, log, clock } = await filledLog(0, { keep: 1000, maxBytes: 200 });
    try {
      const order: string[] = [];
      const writes: Promise<unknown>[] = [];
      const views: AuditEvent[][] = [];
      // Each round: a write acknowledged (a rotation follows it), then two more in flight while
      // the files are listed, so listings overlap writes and rotations.
      for (let round = 0; round < 30; round++) {
        const record = (i: number) => {
          const written = log.record({ type: 'test.event', actor, details: { round, i } });
          writes.push(written.then((e) => order.push(e.id)));
          clock.advance(1);
          return written;
        };
        await record(0);
        record(1);
        // list() opens files one by one unless a rotation overlaps it: then it reads again.
        const listed = log.list({ limit: 10_000 });
        record(2);
        views.push(await listAuditEvents(file, { limit: 10_000 }), await listed);
      }
      await Promise.all(writes);
      expect(new Set(order).size).toBe(90);
      const ids = (await log.list({ limit: 10_000 })).map((e) => e.id).reverse();
      expect(ids).toHaveLength(90);
      for (const view of views) {
        const seen = view.map((e) => e.id).reverse();
        expect(seen).toEqual(ids.slice(0, seen.length));
      }
      expect((await readdir(dir)).length).toBeGreaterThanOrEqual(30);
    } finally {
      await log.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
