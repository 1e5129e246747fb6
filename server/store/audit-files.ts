import { type FileHandle, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { type FileSync, realSync, syncDir } from '../../shared/private-files.js';
import type { AuditEvent, AuditPageFilter } from './audit-records.js';

export type { AuditPageFilter } from './audit-records.js';

/**
 * The audit log on disk: the current file (`audit.jsonl`) and the pieces rotated out of it,
 * `<file>.1` (the newest) to `<file>.<keep>` (the oldest). Each holds JSON lines in the order they
 * were appended, which is also the order of their `at` (FileAuditLog never lets it go back), so the
 * whole log reads newest first by going through the current file, then `.1`, `.2` … each from its end.
 */

/** How much one read takes from a file: a first page of 100 events needs one or two. */
export const AUDIT_READ_CHUNK_BYTES = 64 * 1024;

/** `<file>.<n>`: the n-th newest piece rotated out of the audit file (1 = the newest). */
export function rotatedAuditFile(file: string, n: number): string {
  return `${file}.${n}`;
}

/** The numbers of the rotated pieces that exist, newest first (a crash mid-rotation may leave gaps). */
async function rotatedNumbers(file: string): Promise<number[]> {
  const prefix = `${basename(file)}.`;
  let names: string[];
  try {
    names = await readdir(dirname(file));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return names
    .filter((name) => name.startsWith(prefix) && /^[1-9]\d{0,5}$/.test(name.slice(prefix.length)))
    .map((name) => Number(name.slice(prefix.length)))
    .sort((a, b) => a - b);
}

/**
 * Moves every rotated piece one number up (removing those that would pass `keep`), then the current
 * file to `.1`, oldest first: a crash between two renames leaves every event in exactly one file
 * and the files still in order, with at most a gap in the numbers. The caller creates the new current
 * file and syncs the folder before writing to it.
 */
export async function rotateAuditFiles(file: string, keep: number, sync: FileSync = realSync): Promise<void> {
  if (!Number.isInteger(keep) || keep < 1)
    throw new TypeError('rotateAuditFiles: keep must be an integer >= 1');
  for (const n of (await rotatedNumbers(file)).reverse()) {
    if (n + 1 > keep) await unlink(rotatedAuditFile(file, n));
    else await rename(rotatedAuditFile(file, n), rotatedAuditFile(file, n + 1));
  }
  try {
    await rename(file, rotatedAuditFile(file, 1));
  } catch (error) {
    // Gone already: an earlier rotation moved it and then failed to create the next one.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await syncDir(dirname(file), sync);
}

/** One file of a snapshot: an open handle and its size when opened (the current file may grow). */
export interface AuditPiece {
  name: string;
  handle: FileHandle;
  size: number;
}

/** Counts what reads take from disk (tests and benchmarks prove a listing skips what it can). */
export interface AuditReadOptions {
  /** @default AUDIT_READ_CHUNK_BYTES */
  chunkBytes?: number;
  /** Called after each read, which waits for it (a test can make a rotation happen mid-listing). */
  onRead?: (bytes: number) => unknown;
}

/**
 * Opens the current file and every rotated piece, newest first, as one consistent set: if a
 * rotation (in this process or another) moved a file while they were being opened, it starts again,
 * so no piece is seen twice or missed. Reads through the handles are unaffected by later rotations.
 */
export async function openAuditPieces(file: string): Promise<AuditPiece[]> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const names = [file, ...(await rotatedNumbers(file)).map((n) => rotatedAuditFile(file, n))];
    const pieces: AuditPiece[] = [];
    const inodes: Array<number | null> = [];
    let moved = false;
    try {
      for (const name of names) {
        const handle = await open(name, 'r').catch((error: NodeJS.ErrnoException) => {
          if (error.code === 'ENOENT') return null;
          throw error;
        });
        if (!handle) {
          // The current file may be missing (a crash between a rotation and its new file).
          if (name !== file) moved = true;
          inodes.push(null);
          continue;
        }
        const info = await handle.stat();
        pieces.push({ name, handle, size: info.size });
        inodes.push(info.ino);
      }
      if (!moved && (await sameFiles(file, names, inodes))) return pieces;
    } catch (error) {
      await closeAuditPieces(pieces);
      throw error;
    }
    await closeAuditPieces(pieces);
  }
  throw new Error(`${file}: the audit files kept being rotated while they were opened`);
}

async function sameFiles(file: string, names: string[], inodes: Array<number | null>): Promise<boolean> {
  const now = [file, ...(await rotatedNumbers(file)).map((n) => rotatedAuditFile(file, n))];
  if (now.length !== names.length || now.some((name, i) => name !== names[i])) return false;
  for (let i = 0; i < names.length; i++) {
    const ino = await stat(names[i]!).then(
      (s) => s.ino,
      () => null,
    );
    if (ino !== inodes[i]) return false;
  }
  return true;
}

export async function closeAuditPieces(pieces: AuditPiece[]): Promise<void> {
  await Promise.all(pieces.map((p) => p.handle.close().catch(() => {})));
}

async function readAt(piece: AuditPiece, position: number, length: number, options: AuditReadOptions) {
  const buffer = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await piece.handle.read(buffer, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  await options.onRead?.(got);
  return got === length ? buffer : buffer.subarray(0, got);
}

/**
 * The complete lines of one piece, last first, read from its end a chunk at a time. Bytes after the
 * last newline are a line still being written, or torn by a crash: never yielded.
 */
export async function* linesNewestFirst(
  piece: AuditPiece,
  options: AuditReadOptions = {},
): AsyncGenerator<Buffer> {
  const chunkBytes = options.chunkBytes ?? AUDIT_READ_CHUNK_BYTES;
  let position = piece.size;
  /** The start of a line whose end was read already: the bytes before its newline come next. */
  let carry: Buffer = Buffer.alloc(0);
  let unfinished = true;
  while (position > 0) {
    const length = Math.min(chunkBytes, position);
    position -= length;
    const chunk = await readAt(piece, position, length, options);
    const buffer = carry.length > 0 ? Buffer.concat([chunk, carry]) : chunk;
    let end = buffer.length;
    for (let nl = buffer.lastIndexOf(0x0a, end - 1); nl !== -1; nl = buffer.lastIndexOf(0x0a, end - 1)) {
      if (unfinished) unfinished = false;
      else if (nl + 1 < end) yield buffer.subarray(nl + 1, end);
      end = nl;
      if (end === 0) break;
    }
    carry = buffer.subarray(0, end);
  }
  if (!unfinished && carry.length > 0) yield carry;
}

/** The complete lines of one piece, first first. */
async function* linesOldestFirst(piece: AuditPiece, options: AuditReadOptions = {}): AsyncGenerator<Buffer> {
  const chunkBytes = options.chunkBytes ?? AUDIT_READ_CHUNK_BYTES;
  let carry: Buffer = Buffer.alloc(0);
  for (let position = 0; position < piece.size; position += chunkBytes) {
    const chunk = await readAt(piece, position, Math.min(chunkBytes, piece.size - position), options);
    const buffer = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
    let start = 0;
    for (let nl = buffer.indexOf(0x0a, start); nl !== -1; nl = buffer.indexOf(0x0a, start)) {
      if (nl > start) yield buffer.subarray(start, nl);
      start = nl + 1;
    }
    carry = buffer.subarray(start);
  }
}

/** One line as an event, or null for a line that is not one (torn by a crash mid-append). */
export function parseAuditLine(line: Buffer): AuditEvent | null {
  try {
    const event = JSON.parse(line.toString('utf8')) as AuditEvent;
    if (typeof event?.id !== 'string' || typeof event.type !== 'string') return null;
    if (typeof event.at !== 'string' || Number.isNaN(Date.parse(event.at))) return null;
    return event;
  } catch {
    return null;
  }
}

/** The newest event in `piece` (one chunk from its end, usually), or null if it holds none. */
async function newestIn(piece: AuditPiece, options: AuditReadOptions): Promise<AuditEvent | null> {
  for await (const line of linesNewestFirst(piece, options)) {
    const event = parseAuditLine(line);
    if (event) return event;
  }
  return null;
}

/**
 * Every event of the audit log `auditFile` (the current file and its rotated pieces `<file>.<n>`)
 * oldest first, from `after` (exclusive) or `since` (inclusive) on: pieces whose newest event is
 * older are skipped after reading their last line. Events appended after the call started are not
 * included; damaged lines are skipped.
 */
export async function* readAuditEvents(
  auditFile: string,
  bounds: { after?: string; since?: string } = {},
  options: AuditReadOptions = {},
): AsyncGenerator<AuditEvent> {
  const after = bounds.after === undefined ? null : Date.parse(bounds.after);
  const since = bounds.since === undefined ? null : Date.parse(bounds.since);
  if (Number.isNaN(after) || Number.isNaN(since))
    throw new TypeError('readAuditEvents: after/since must be ISO times');
  const wanted = (at: number) => (after === null || at > after) && (since === null || at >= since);
  const pieces = await openAuditPieces(auditFile);
  try {
    const oldestFirst = [...pieces].reverse();
    let first = 0;
    if (after !== null || since !== null) {
      // Pieces are in time order: start at the oldest whose newest event is wanted.
      first = oldestFirst.length;
      for (let i = oldestFirst.length - 1; i >= 0; i--) {
        const newest = await newestIn(oldestFirst[i]!, options);
        if (newest && !wanted(Date.parse(newest.at))) break;
        first = i;
      }
    }
    for (const piece of oldestFirst.slice(first)) {
      for await (const line of linesOldestFirst(piece, options)) {
        const event = parseAuditLine(line);
        if (event && wanted(Date.parse(event.at))) yield event;
      }
    }
  } finally {
    await closeAuditPieces(pieces);
  }
}

/** Whether `event` is of `type` or under it (`enrollment` takes `enrollment.refused`). */
export function matchesType(event: AuditEvent, type: string | undefined): boolean {
  return !type || event.type === type || event.type.startsWith(`${type}.`);
}

/**
 * One page of the audit log, newest first, read backwards from the end of the newest file: it stops
 * once `limit` events are found, or at the first event older than `since` (older pieces are never
 * read). `before` is the id of the last event of the previous page: the page starts after it, and
 * is empty if that event is no longer in the log.
 */
export async function listAuditEvents(
  auditFile: string,
  filter: AuditPageFilter,
  options: AuditReadOptions & {
    /**
     * Open each file only when the page reaches it (a first page opens one file), instead of the
     * whole set up front: only for a caller that knows no rotation ran meanwhile (FileAuditLog).
     */
    lazy?: boolean;
  } = {},
): Promise<AuditEvent[]> {
  const since = filter.since === undefined ? null : Date.parse(filter.since);
  const cursor = filter.before === undefined ? null : Buffer.from(JSON.stringify(filter.before));
  let passedCursor = cursor === null;
  const page: AuditEvent[] = [];
  const pieces = options.lazy ? piecesOneByOne(auditFile) : snapshotPieces(auditFile);
  for await (const piece of pieces) {
    for await (const line of linesNewestFirst(piece, options)) {
      // Until the cursor's line, a byte search: paging deep into the log parses nothing it skips.
      if (!passedCursor) {
        passedCursor = line.includes(cursor!) && parseAuditLine(line)?.id === filter.before;
        continue;
      }
      const event = parseAuditLine(line);
      if (!event) continue;
      if (since !== null && Date.parse(event.at) < since) return page;
      if (!matchesType(event, filter.type)) continue;
      if (filter.security !== undefined && event.security !== filter.security) continue;
      page.push(event);
      if (page.length >= filter.limit) return page;
    }
  }
  return page;
}

async function* snapshotPieces(file: string): AsyncGenerator<AuditPiece> {
  const pieces = await openAuditPieces(file);
  try {
    yield* pieces;
  } finally {
    await closeAuditPieces(pieces);
  }
}

/** The current file, then (only if asked for) each rotated one, newest first, each open while read. */
async function* piecesOneByOne(file: string): AsyncGenerator<AuditPiece> {
  let names: string[] | null = null;
  for (let i = 0; ; i++) {
    if (i === 1) names = (await rotatedNumbers(file)).map((n) => rotatedAuditFile(file, n));
    const name = i === 0 ? file : names![i - 1];
    if (name === undefined) return;
    const handle = await open(name, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' && i === 0) return null;
      throw error;
    });
    if (!handle) continue;
    try {
      yield { name, handle, size: (await handle.stat()).size };
    } finally {
      await handle.close().catch(() => {});
    }
  }
}
