import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { DomainError, ERROR_REASONS, type ErrorReason } from '../../shared/errors.js';
import { bearerTokenOf, type Services } from '../context.js';
import type { ClientAddressOf } from '../http/client-address.js';
import { BACKUP_FORMAT } from './format.js';
import { backupChunks, type Snapshot, type SnapshotSources, takeSnapshot } from './snapshot.js';

/** Where the online backup is served: `GET` with `Authorization: Bearer <admin-scope key>`. */
export const BACKUP_PATH = '/admin/backup';
export const BACKUP_CONTENT_TYPE = `application/vnd.${BACKUP_FORMAT}+jsonl`;

const STATUS: Record<string, number> = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  PRECONDITION_FAILED: 412,
  TOO_MANY_REQUESTS: 429,
  INTERNAL_SERVER_ERROR: 500,
};

/**
 * Answers `GET /admin/backup` with a backup of the running server, streamed. A plain HTTP response
 * rather than a tRPC procedure: tRPC's HTTP adapter would JSON.stringify the whole answer in one
 * call (the stall this avoids: ~0.1–0.3 s at 25k connectors) and hold it twice in memory; here the
 * snapshot is taken in one turn and written out in chunks, with back-pressure. Authentication,
 * scope and audit are those of an admin mutation: a valid key of the admin scope, refusals audited
 * as `admin.refused` (coalesced for unknown keys), a backup as `backup.created` before its first byte.
 */
export function backupHandler(
  services: Services,
  sources: SnapshotSources & {
    adminKeyFile: string;
    clientAddressOf: ClientAddressOf;
    logger: Logger;
    /** With --database-url: refused (BACKUP_UNSUPPORTED), pg_dump backs the database up. */
    inDatabase: boolean;
  },
) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const remoteAddress = sources.clientAddressOf(req);
    const refuse = (reason: ErrorReason, message: string = ERROR_REASONS[reason].message) => {
      const body = JSON.stringify({ error: { reason, message, hint: ERROR_REASONS[reason].hint } });
      res.writeHead(STATUS[ERROR_REASONS[reason].code] ?? 400, {
        'content-type': 'application/json',
        'cache-control': 'no-store',
      });
      res.end(body);
    };
    if (req.method !== 'GET') return refuse('VALIDATION_FAILED', `${BACKUP_PATH} takes GET only.`);
    let principal: ReturnType<Services['apiKeys']['authenticate']>;
    try {
      principal = services.apiKeys.authenticate(bearerTokenOf(req));
    } catch (error) {
      if (!(error instanceof DomainError)) throw error;
      // The same per-address limit and coalesced audit as every other admin call without a valid key.
      const refusal = await services.limiter.adminAuthFailed(remoteAddress, error, BACKUP_PATH);
      const retryAfter = refusal.details.retryAfterSeconds;
      if (typeof retryAfter === 'number') res.setHeader('retry-after', String(retryAfter));
      return refuse(refusal.reason, refusal.message);
    }
    const actor = { kind: 'admin' as const, apiKeyId: principal.apiKeyId };
    if (principal.scope !== 'admin') {
      await services.audit.record({
        type: 'admin.refused',
        actor,
        remoteAddress,
        outcome: 'refused',
        reason: 'SCOPE_FORBIDDEN',
        details: { path: BACKUP_PATH },
      });
      return refuse(
        'SCOPE_FORBIDDEN',
        'A backup holds every secret of the server: it needs an admin-scope key.',
      );
    }
    // A replica's memory lacks the audit log, and restore writes a data dir, not the database.
    if (sources.inDatabase) return refuse('BACKUP_UNSUPPORTED');
    const adminKey = await readFile(sources.adminKeyFile, 'utf8').catch(() => null);
    const snapshot = takeSnapshot(sources, adminKey);
    // Audited before the first byte: the first chunk already holds the secret, the signing keys and
    // the admin key, and a caller that hung up after it (audited at the end, as it was) took them
    // with no trace. An event the audit log holds until it takes writes again (AUDIT_NOT_WRITTEN)
    // will be written: the backup goes out (storage trouble is when one is wanted); one that could
    // not even be held, and no backup is sent.
    try {
      await services.audit.record({
        type: 'backup.created',
        actor,
        remoteAddress,
        details: {
          snapshotAt: new Date(snapshot.snapshotAt).toISOString(),
          records: recordCount(snapshot),
        },
      });
    } catch (error) {
      if (error instanceof DomainError && error.reason === 'AUDIT_NOT_WRITTEN')
        sources.logger.warn(
          { remoteAddress, apiKeyId: principal.apiKeyId },
          'a backup is sent while the audit log takes no writes: its backup.created event is held and written once it does',
        );
      else {
        snapshot.records.release();
        return refuse(
          'STORE_UNAVAILABLE',
          'The backup was not sent: its audit event could not be written (the audit log takes no writes).',
        );
      }
    }
    // Gone while the event was written: nothing to send, and the snapshot is let go.
    if (res.destroyed) {
      snapshot.records.release();
      return;
    }
    res.writeHead(200, {
      'content-type': BACKUP_CONTENT_TYPE,
      'cache-control': 'no-store',
      'x-snapshot-at': new Date(snapshot.snapshotAt).toISOString(),
    });
    let summary: { bytes: number; records: number } | null = null;
    for await (const chunk of backupChunks(snapshot, (s) => (summary = s))) {
      if (res.destroyed) break;
      if (!res.write(chunk)) await drainedOrClosed(res);
    }
    if (summary === null || res.destroyed)
      sources.logger.warn(
        { remoteAddress, apiKeyId: principal.apiKeyId },
        'a backup was cut before its end: the caller has part of it (the secrets come first)',
      );
    res.end();
  };
}

/** How many store records a snapshot holds. */
function recordCount(snapshot: Snapshot): number {
  let count = 0;
  for (const [, list] of snapshot.records.sections) count += list.length;
  return count;
}

/** Waits for the response to take more, or to be gone; leaves no listener behind. */
function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
