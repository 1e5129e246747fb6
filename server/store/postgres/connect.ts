import type pg from 'pg';
import { DomainError } from '../../../shared/errors.js';

/**
 * How long opening a connection may take. Without a bound, a database that takes the connection
 * and never answers (a wrong port on a busy host, a stalled server) would hang a start for ever, and
 * a listener's reconnection with it.
 */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The options of every connection the server opens to `url`: the connect bound above, and TCP
 * keep-alives, so that a listening connection that sits idle is not dropped unseen by a firewall.
 */
export function connectionOptions(url: string): pg.ClientConfig {
  return { connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, keepAlive: true };
}

/**
 * A read the database could not answer (unreachable, a privilege missing), as the API says it:
 * STORE_UNAVAILABLE with the SQLSTATE or socket error, rather than an unexplained internal error.
 */
export function readFailure(what: string, error: unknown): DomainError {
  const code = (error as { code?: string }).code ?? (error as Error).message;
  return new DomainError('STORE_UNAVAILABLE', `${what} could not be read from the database (${code}).`);
}

/** How long an admin's read of the database may take before it is answered STORE_UNAVAILABLE. */
export const READ_WAIT_MS = 5_000;

/**
 * Admin reads (the audit log, the replicas' list) one replica runs on its database at once. They share
 * a pool of 4 with what must not wait: the sessions' claims and releases (how the other replicas learn
 * who is connected where), the audit log's writes and the signing keys' check. Unbounded, a read-scope
 * key calling `audit.list` with a filter that scans the table, a few dozen at a time, held every
 * connection for seconds, and a session's claim reached the other replicas 7 s late instead of ~50 ms.
 */
export const ADMIN_READS_AT_ONCE = 1;

/** The admin reads running on each pool, and the callers waiting for a turn (oldest first). */
const turns = new WeakMap<pg.Pool, { running: number; waiting: Array<() => void> }>();

/** Waits for an admin read's turn on `pool`, at most `ms`; answers a function ending it, or null on time out. */
async function adminReadTurn(pool: pg.Pool, ms: number): Promise<(() => void) | null> {
  let turn = turns.get(pool);
  if (!turn) {
    turn = { running: 0, waiting: [] };
    turns.set(pool, turn);
  }
  const state = turn;
  const end = () => {
    const next = state.waiting.shift();
    if (next) next();
    else state.running--;
  };
  if (state.running < ADMIN_READS_AT_ONCE) {
    state.running++;
    return end;
  }
  return new Promise((resolve) => {
    const go = () => {
      clearTimeout(timer);
      resolve(end);
    };
    const timer = setTimeout(() => {
      state.waiting.splice(state.waiting.indexOf(go), 1);
      resolve(null);
    }, ms);
    state.waiting.push(go);
  });
}

/**
 * A read an admin waits on (the audit log, the replicas' list), bounded: a database that stops
 * answering gets STORE_UNAVAILABLE within READ_WAIT_MS (plus the pool's wait for a connection, at
 * most CONNECT_TIMEOUT_MS), not a request that hangs until the client gives up, and PostgreSQL
 * cancels it too (statement_timeout). A read has nothing to undo; a connection whose read failed is
 * dropped. At most ADMIN_READS_AT_ONCE run on a pool at once; the wait for a turn counts in
 * READ_WAIT_MS.
 */
export async function boundedRead<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  what: string,
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  const deadline = performance.now() + READ_WAIT_MS;
  const end = await adminReadTurn(pool, READ_WAIT_MS);
  if (!end)
    throw new DomainError(
      'STORE_UNAVAILABLE',
      `${what} could not be read: other reads of the database kept this server busy for ${READ_WAIT_MS / 1000} s; try again.`,
    );
  const left = () => Math.max(1, Math.ceil(deadline - performance.now()));
  let client: pg.PoolClient | undefined;
  let failed: Error | undefined;
  // The pool listens for a connection's errors only while it is idle: one lost mid-read (reset,
  // the database restarted) was an 'error' event no one heard, and it ended the process.
  const lost = (error: Error) => {
    failed ??= error;
  };
  try {
    const connection = await pool.connect();
    client = connection;
    connection.on('error', lost);
    // Each statement bounded on this side too: a database that stops answering (a partition) held
    // an unbounded BEGIN, and with it the pool's only turn for admin reads, for as long as it lasted.
    const step = (statement: string) =>
      connection.query({ text: statement, query_timeout: left() + 1000 } as pg.QueryConfig);
    await step('BEGIN READ ONLY');
    // PostgreSQL's own bound (the client's only stops waiting): a read cut short on this side kept
    // running there, holding a backend (and its locks' queue place) until it finished, however long.
    const ms = left();
    await step(`SET LOCAL statement_timeout = ${ms}`);
    const result = await connection.query<R>({ text, values, query_timeout: ms + 1000 } as pg.QueryConfig);
    await step('COMMIT');
    return result;
  } catch (error) {
    failed = error instanceof Error ? error : new Error(String(error));
    throw readFailure(what, error);
  } finally {
    // A connection whose read failed is dropped, not handed back mid-transaction.
    client?.off('error', lost);
    client?.release(failed);
    end();
  }
}
