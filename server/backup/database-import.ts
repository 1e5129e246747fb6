import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { systemClock } from '../clock.js';
import { databaseStartError } from '../database-state.js';
import { REPLICA_MARKER, replicaDatabaseOf } from '../replica-marker.js';
import type { AuditEvent } from '../services/audit.js';
import { randomId, SecretBox } from '../services/secrets.js';
import { readKeys, type SigningKeyFile } from '../services/signing-key-records.js';
import { readAuditEvents } from '../store/audit-files.js';
import { lockDataDir } from '../store/data-dir-lock.js';
import { JsonDocumentFile } from '../store/durable-files.js';
import { loadStoreFiles } from '../store/journal.js';
import { insertAuditEvents } from '../store/postgres/audit-table.js';
import { connectionOptions } from '../store/postgres/connect.js';
import { databaseLocation } from '../store/postgres/location.js';
import { migrateToLatest } from '../store/postgres/migrate.js';
import { sealDocument } from '../store/postgres/sealed-document.js';
import { storeProblem } from '../store/record-check.js';
import { SECTIONS, type StoreSection } from '../store/store.js';
import { DATA_FILES } from './offline.js';

/** Records one INSERT carries. */
const RECORDS_PER_STATEMENT = 1000;
/** Audit events one INSERT carries (as the audit table's own appends). */
const AUDIT_EVENTS_PER_STATEMENT = 5000;
/** The row SealedDocument keeps the signing keys in (database-state.ts opens it by this name). */
const SIGNING_KEYS_DOCUMENT = 'signing-keys';

/** The import cannot go ahead as asked (a database that is not empty, a data dir with no state). */
export class ImportRefusedError extends Error {
  override readonly name = 'ImportRefusedError';
}

export interface ImportOptions {
  dataDir: string;
  databaseUrl: string;
  /** Told how far the copy is, a line at a time. */
  progress?: (line: string) => void;
}

export interface ImportResult {
  /** Where, as host:port/database (never the password). */
  database: string;
  records: Record<StoreSection, number>;
  auditEvents: number;
  signingKeys: number;
}

/**
 * Copies a stopped server's data dir into an empty PostgreSQL database, so that replicas take over
 * where the single server stopped: every record (the store with its journal folded in), every audit
 * event (the rotated files too, oldest first, ids and times kept) and the signing keys, sealed with
 * the data dir's own secret (replicas are given that secret: the provisioning keys stay readable and
 * every identity issued before still verifies). One transaction: a failure leaves the database as
 * empty as it was. The data dir is locked meanwhile (refused while a server holds it) and only read.
 */
export async function importDataDir(options: ImportOptions): Promise<ImportResult> {
  const { dataDir, databaseUrl } = options;
  const progress = options.progress ?? (() => {});
  const info = await stat(dataDir).catch(() => null);
  if (!info?.isDirectory())
    throw new ImportRefusedError(
      `data dir ${dataDir} does not exist or is not a directory: check --data-dir`,
    );
  // A replica's dir: what store.json it still holds is from before its move to a database, and
  // imported again it would bring back everything revoked and deleted through the replicas since.
  const replicaOf = replicaDatabaseOf(dataDir);
  if (replicaOf !== null)
    throw new ImportRefusedError(
      `data dir ${dataDir} is a replica's (${REPLICA_MARKER}): its state is in the PostgreSQL database at ${replicaOf}, and what files it still has are from before it moved there. ` +
        'To copy that database elsewhere use pg_dump and pg_restore; to import a single server, give its own data dir',
    );
  const lock = await lockDataDir(dataDir);
  try {
    const path = (name: string) => join(dataDir, name);
    const store = loadStoreFiles(path(DATA_FILES.store));
    if (!store)
      throw new ImportRefusedError(
        `${dataDir} holds no ${DATA_FILES.store}: nothing to import (give the data dir of a server that has run)`,
      );
    const problem = storeProblem(store);
    if (problem)
      throw new ImportRefusedError(
        `${path(DATA_FILES.store)} holds a record this server cannot use: ${problem}. Nothing was imported`,
      );
    const secret = await readDataDirSecret(path(DATA_FILES.secret));
    const signingKeys = await readKeys(new JsonDocumentFile<SigningKeyFile>(path(DATA_FILES.signingKeys)));
    if (!signingKeys)
      throw new ImportRefusedError(
        `${dataDir} holds no ${DATA_FILES.signingKeys}: without the signing keys no identity issued before would verify`,
      );

    const where = databaseLocation(databaseUrl);
    const client = new pg.Client(connectionOptions(databaseUrl));
    client.on('error', () => {}); // a dropped connection rejects the query in flight
    try {
      await client.connect();
      await migrateToLatest(client);
    } catch (error) {
      await client.end().catch(() => {});
      throw databaseStartError(databaseUrl, error);
    }
    try {
      await client.query('BEGIN');
      await refuseUnlessEmpty(client, where);
      // Versions past any the feed has handed out: the replicas' next commits number above them.
      const { rows } = await client.query<{ version: string }>(
        `SELECT nextval(pg_get_serial_sequence('store_changes', 'seq'))::text AS version`,
      );
      const version = rows[0]!.version;
      const records = {} as Record<StoreSection, number>;
      const total = SECTIONS.reduce((sum, section) => sum + Object.keys(store[section]).length, 0);
      let copied = 0;
      for (const section of SECTIONS) {
        const list = Object.values(store[section]) as Array<{ id: string }>;
        records[section] = list.length;
        for (let start = 0; start < list.length; start += RECORDS_PER_STATEMENT) {
          const chunk = list.slice(start, start + RECORDS_PER_STATEMENT);
          await client.query(
            `INSERT INTO store_records (section, id, body, version)
             SELECT $1, i, b::jsonb, $4::bigint FROM unnest($2::text[], $3::text[]) AS u(i, b)`,
            [section, chunk.map((r) => r.id), chunk.map((r) => JSON.stringify(r)), version],
          );
          copied += chunk.length;
          progress(`records: ${copied} of ${total}`);
        }
      }

      let auditEvents = 0;
      let batch: AuditEvent[] = [];
      const flush = async () => {
        if (batch.length === 0) return;
        await insertAuditEvents(client, batch);
        auditEvents += batch.length;
        batch = [];
        progress(`audit events: ${auditEvents}`);
      };
      for await (const event of readAuditEvents(path(DATA_FILES.audit))) {
        batch.push(event);
        if (batch.length >= AUDIT_EVENTS_PER_STATEMENT) await flush();
      }
      await flush();

      await client.query(`INSERT INTO server_documents (name, body, version) VALUES ($1, $2, 1)`, [
        SIGNING_KEYS_DOCUMENT,
        sealDocument(new SecretBox(secret), SIGNING_KEYS_DOCUMENT, signingKeys),
      ]);
      progress(`signing keys: ${signingKeys.keys.length}, sealed with ${path(DATA_FILES.secret)}`);
      const result = { database: where, records, auditEvents, signingKeys: signingKeys.keys.length };
      await insertAuditEvents(client, [importedEvent(dataDir, result)]);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      await client.end().catch(() => {});
    }
  } finally {
    await lock.release();
  }
}

/** The data dir's secret.key, read as it is (never made: a new one would open nothing). */
async function readDataDirSecret(file: string): Promise<Buffer> {
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new ImportRefusedError(
      `${file} cannot be read (${error.code ?? error.message}): without it the stored provisioning keys and the signing keys cannot be opened`,
    );
  });
  const secret = Buffer.from(text.trim(), 'base64');
  if (secret.length !== 32 || secret.toString('base64') !== text.trim())
    throw new ImportRefusedError(
      `${file} is damaged (it must hold one base64 32-byte secret): restore it from a backup`,
    );
  return secret;
}

/**
 * Refuses a database that holds anything a server wrote: records, audit events, a sealed document
 * or a replica's heartbeat. The tables are locked first, so a replica starting meanwhile waits.
 */
async function refuseUnlessEmpty(client: pg.ClientBase, where: string): Promise<void> {
  await client.query(
    'LOCK TABLE store_records, audit_events, server_documents, replicas, agent_sessions IN EXCLUSIVE MODE',
  );
  const { rows } = await client.query<Record<string, string>>(
    `SELECT (SELECT count(*) FROM store_records)::text AS records,
            (SELECT count(*) FROM audit_events)::text AS audit_events,
            (SELECT count(*) FROM server_documents)::text AS documents,
            (SELECT count(*) FROM replicas)::text AS replicas`,
  );
  const labels: Record<string, string> = {
    records: 'record(s)',
    audit_events: 'audit event(s)',
    documents: 'sealed document(s)',
    replicas: 'replica heartbeat(s)',
  };
  const found = Object.entries(rows[0] ?? {})
    .filter(([, count]) => count !== '0')
    .map(([what, count]) => `${count} ${labels[what]}`);
  if (found.length > 0)
    throw new ImportRefusedError(
      `the database at ${where} is not empty (${found.join(', ')}): import only into a new, empty database (createdb); nothing was written`,
    );
}

function importedEvent(dataDir: string, result: ImportResult): AuditEvent {
  return {
    id: randomId('evt'),
    at: new Date(systemClock.now()).toISOString(),
    type: 'database.imported',
    actor: { kind: 'system' },
    outcome: 'success',
    reason: null,
    security: true,
    remoteAddress: null,
    groupId: null,
    connectorId: null,
    keyId: null,
    details: {
      dataDir,
      records: result.records,
      auditEvents: result.auditEvents,
      signingKeys: result.signingKeys,
    },
  };
}
