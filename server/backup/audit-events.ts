import type { AuditEvent } from '../services/audit.js';
import { closeAuditPieces, openAuditPieces, readAuditEvents } from '../store/audit-files.js';

/**
 * Every event of an audit log from `since` on (all without it), oldest first, across its rotated
 * files (`<file>.<n>`), torn lines skipped; `files` lists the files there were, oldest first. A
 * missing log gives no events and no files.
 */
export async function readAuditEventsOf(
  file: string,
  since?: string,
): Promise<{ events: AuditEvent[]; files: string[]; oldestAt: string | null }> {
  const pieces = await openAuditPieces(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return [];
    throw error;
  });
  const files = pieces.map((p) => p.name).reverse();
  await closeAuditPieces(pieces);
  if (files.length === 0) return { events: [], files, oldestAt: null };
  // The oldest event kept: a log rotated past the snapshot cannot replay what it no longer holds.
  let oldestAt: string | null = null;
  for await (const event of readAuditEvents(file)) {
    oldestAt = event.at;
    break;
  }
  const events: AuditEvent[] = [];
  for await (const event of readAuditEvents(file, since ? { since } : {})) events.push(event);
  return { events, files, oldestAt };
}
