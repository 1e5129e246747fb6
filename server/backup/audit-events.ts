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
): Promise<{ events: AuditEvent[]; files: string[] }> {
  const pieces = await openAuditPieces(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return [];
    throw error;
  });
  const files = pieces.map((p) => p.name).reverse();
  await closeAuditPieces(pieces);
  if (files.length === 0) return { events: [], files };
  const events: AuditEvent[] = [];
  for await (const event of readAuditEvents(file, since ? { since } : {})) events.push(event);
  return { events, files };
}
