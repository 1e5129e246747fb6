import pg from 'pg';
import type { SecretBox } from '../../services/secrets.js';
import { DataFileError } from '../data-file.js';
import { DocumentConflict, DocumentWriteUnconfirmed, type KeptDocument } from '../durable-files.js';
import { checkOut } from './checked-out.js';
import { connectionOptions } from './connect.js';
import {
  askTransactionOutcome,
  LOST_COMMIT_ASK_MS,
  LOST_COMMIT_LATE_ASK_MS,
  type LostTransaction,
  leavesOutcomeUnknown,
} from './lost-commit.js';

/** The channel `server_documents`' trigger notifies on; the payload is `<name> <version>`. */
const DOCUMENTS_CHANNEL = 'server_documents';
/**
 * How often a replica checks a document's version even without a notification: the bound on how
 * long a change can take to reach it when a notification is lost or its listener connection is down.
 */
export const DOCUMENT_CHECK_INTERVAL_MS = 5000;

/**
 * The database holds a document this replica's secret cannot open: the replicas were not given the
 * same secret. Thrown at start-up, where it is the one line the operator reads.
 */
export class SecretMismatchError extends DataFileError {
  constructor(name: string) {
    super(
      `the database's ${name} document`,
      "cannot be decrypted: this replica's secret differs from the one the database was set up with; give every replica that secret with --secret-file (a 0600 copy of the secret.key of the replica that set the database up)",
    );
  }
}

/**
 * The stored form of document `name`: sealed with `box`, the name bound in (so rows cannot be
 * swapped). SealedDocument writes it; an import writes the first one.
 */
export function sealDocument(box: SecretBox, name: string, document: unknown): string {
  return box.seal(JSON.stringify(document), associatedDataOf(name));
}

function associatedDataOf(name: string): string {
  return `server_documents/${name}`;
}

export interface SealedDocumentOptions {
  /** Reads and writes run on the pool (the caller's: close() leaves it open). */
  pool: pg.Pool;
  /** For the listener, a connection of its own (never LISTEN on a pooled one). */
  connectionString: string;
  /** The row's name, e.g. `signing-keys`; also bound into the seal, so rows cannot be swapped. */
  name: string;
  /** Seals the body with the server secret every replica is given. */
  box: SecretBox;
  /** @default DOCUMENT_CHECK_INTERVAL_MS */
  checkIntervalMs?: number;
  /** Told of a lost listener or a failed check (the next check tries again). */
  onError?: (error: Error) => void;
  /** How long a write whose COMMIT got no answer asks what became of it. @default LOST_COMMIT_ASK_MS */
  lostCommitAskMs?: number;
  /**
   * How long each statement of a write may take (a row lock held elsewhere, a frozen database):
   * past it before the COMMIT nothing was written; past it on the COMMIT its outcome is asked about.
   * @default DOCUMENT_WRITE_WAIT_MS
   */
  writeWaitMs?: number;
}

/** How long each statement of a document's write may take by default (the store's commit bound). */
export const DOCUMENT_WRITE_WAIT_MS = 10_000;

/**
 * A JSON document in `server_documents`, sealed with the server secret (AES-256-GCM): the database
 * never holds it in clear, and a replica given another secret cannot start. Writes name the version
 * they read (optimistic: a concurrent write from another replica makes one of them DocumentConflict,
 * never a lost update). A committed write wakes the other replicas by NOTIFY at once; a version
 * check every `checkIntervalMs` catches what a lost notification or listener missed, and
 * reconnects the listener.
 */
export class SealedDocument<T> implements KeptDocument<T> {
  readonly location: string;
  /** The version this replica last read or wrote (null: none yet). */
  private version: bigint | null = null;
  private listener: pg.Client | null = null;
  private timer: NodeJS.Timeout | null = null;
  private changed: (() => void) | null = null;
  private closed = false;

  constructor(private readonly options: SealedDocumentOptions) {
    this.location = `the database's ${options.name} document`;
  }

  async read(): Promise<T | undefined> {
    const { rows } = await this.options.pool.query<{ body: string; version: string }>(
      `SELECT body, version FROM server_documents WHERE name = $1`,
      [this.options.name],
    );
    const row = rows[0];
    if (!row) return undefined;
    let text: string;
    try {
      text = this.options.box.open(row.body, associatedDataOf(this.options.name));
    } catch {
      throw new SecretMismatchError(this.options.name);
    }
    this.version = BigInt(row.version);
    return JSON.parse(text) as T;
  }

  async write(document: T): Promise<void> {
    const body = sealDocument(this.options.box, this.options.name, document);
    if (this.version === null) {
      const { rows } = await this.options.pool.query<{ version: string }>(
        `INSERT INTO server_documents (name, body, version) VALUES ($1, $2, 1)
         ON CONFLICT (name) DO NOTHING RETURNING version`,
        [this.options.name, body],
      );
      if (!rows[0]) throw new DocumentConflict(`${this.location} was changed by another replica`);
      this.version = BigInt(rows[0].version);
      return;
    }
    this.version = await this.update(body, this.version);
  }

  /**
   * Replaces the body written at version `base`; returns the new version. A transaction of its own,
   * so that a COMMIT whose answer is lost can be asked about: the body is its mark (sealed with a
   * fresh nonce, no other write has the same text).
   */
  private async update(body: string, base: bigint): Promise<bigint> {
    const { client, release } = await checkOut(this.options.pool);
    // Each statement bounded: a timed-out one may still run on its connection, which then goes.
    const bounded = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) =>
      client.query<R>({
        text,
        values,
        query_timeout: this.options.writeWaitMs ?? DOCUMENT_WRITE_WAIT_MS,
      } as pg.QueryConfig);
    let lost: { xid: string; version: bigint; cause: unknown };
    let broken: Error | undefined;
    try {
      await bounded('BEGIN');
      const { rows } = await bounded<{ version: string; xid: string }>(
        `UPDATE server_documents SET body = $2, version = version + 1, updated_at = now()
         WHERE name = $1 AND version = $3 RETURNING version, pg_current_xact_id()::text AS xid`,
        [this.options.name, body, base.toString()],
      );
      const written = rows[0];
      if (!written) throw new DocumentConflict(`${this.location} was changed by another replica`);
      try {
        await bounded('COMMIT');
        return BigInt(written.version);
      } catch (error) {
        if (!leavesOutcomeUnknown(error)) throw error;
        broken = error as Error;
        lost = { xid: written.xid, version: BigInt(written.version), cause: error };
      }
    } catch (error) {
      // Not answered in time (no SQLSTATE): the connection goes, and its backend rolls back.
      if (!(error instanceof DocumentConflict) && leavesOutcomeUnknown(error)) broken = error as Error;
      else await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      release(broken);
    }
    return this.learnOutcome(body, lost);
  }

  /** After a COMMIT with no answer: the new version if it committed; throws if not, or if unknown. */
  private async learnOutcome(
    body: string,
    lost: { xid: string; version: bigint; cause: unknown },
  ): Promise<bigint> {
    const transaction: LostTransaction = {
      xid: lost.xid,
      markThere: async (pool) =>
        (
          await pool.query('SELECT 1 FROM server_documents WHERE name = $1 AND body = $2', [
            this.options.name,
            body,
          ])
        ).rowCount === 1,
      // Another replica may have written over it since, which only a body of its own would show.
      committedWithoutMark: 'unknown',
    };
    const outcome = await askTransactionOutcome(this.options.pool, transaction, {
      withinMs: this.options.lostCommitAskMs ?? LOST_COMMIT_ASK_MS,
    });
    const message = `no answer to the COMMIT of ${this.location} (${(lost.cause as Error).message})`;
    if (outcome === 'committed') return lost.version;
    if (outcome === 'aborted') throw new Error(message, { cause: lost.cause });
    const later = askTransactionOutcome(this.options.pool, transaction, {
      withinMs: LOST_COMMIT_LATE_ASK_MS,
      pauseMs: 1000,
      stopped: () => this.closed,
    }).then((known) => (known === 'unknown' ? known : known === 'committed'));
    throw new DocumentWriteUnconfirmed(message, later, { cause: lost.cause });
  }

  /** Follows the other replicas' writes: a notification at once, a version check every interval. */
  watch(changed: () => void): () => void {
    if (this.changed) throw new TypeError('SealedDocument: already watched');
    this.changed = changed;
    void this.listen().catch((error) => this.options.onError?.(error as Error));
    this.timer = setInterval(
      () => void this.check(),
      this.options.checkIntervalMs ?? DOCUMENT_CHECK_INTERVAL_MS,
    );
    this.timer.unref();
    return () => void this.close();
  }

  /** The listener's backend pid (tests end it with pg_terminate_backend to drop the connection). */
  get listenerPid(): number | undefined {
    return (this.listener as unknown as { processID?: number } | null)?.processID;
  }

  /** Compares the stored version with the one last seen; reconnects a lost listener. */
  async check(): Promise<void> {
    if (!this.changed) return;
    try {
      if (!this.listener) return await this.listen();
      const { rows } = await this.options.pool.query<{ version: string }>(
        `SELECT version FROM server_documents WHERE name = $1`,
        [this.options.name],
      );
      if (rows[0] && BigInt(rows[0].version) !== this.version) this.changed?.();
    } catch (error) {
      this.options.onError?.(error as Error);
    }
  }

  private async listen(): Promise<void> {
    const client = new pg.Client(connectionOptions(this.options.connectionString));
    const lost = (error: Error) => {
      if (this.listener !== client) return;
      this.listener = null;
      this.options.onError?.(error);
      client.end().catch(() => {});
    };
    client.on('error', lost);
    client.on('end', () => lost(new Error('document listener connection ended')));
    client.on('notification', (message) => {
      // Any role that may connect can notify here: a payload out of shape is nobody's (and a throw
      // in this handler would end the process). A well-formed one only makes the replica read the
      // table, which holds the truth, again.
      const [name, version] = (message.payload ?? '').split(' ');
      if (name !== this.options.name || !version || !/^[0-9]{1,19}$/.test(version)) return;
      if (BigInt(version) !== this.version) this.changed?.();
    });
    try {
      await client.connect();
      if (!this.changed) {
        await client.end();
        return;
      }
      await client.query(`LISTEN ${DOCUMENTS_CHANNEL}`);
    } catch (error) {
      // Not yet the listener: ended here, or each failed retry left a connection open.
      client.end().catch(() => {});
      throw error;
    }
    this.listener = client;
    // A write committed before LISTEN took effect sent its notification to no one: look once now.
    await this.check();
  }

  /** Stops watching and closes the listener connection (the pool is the caller's). */
  async close(): Promise<void> {
    this.closed = true;
    this.changed = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const listener = this.listener;
    this.listener = null;
    await listener?.end().catch(() => {});
  }
}
