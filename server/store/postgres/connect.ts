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
 * A read an admin waits on (the audit log, the replicas' list), bounded: a database that stops
 * answering gets STORE_UNAVAILABLE within READ_WAIT_MS (plus the pool's wait for a connection, at
 * most CONNECT_TIMEOUT_MS), not a request that hangs until the client gives up. A read has nothing
 * to undo; the connection it was on is dropped.
 */
export async function boundedRead<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  what: string,
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  try {
    return await pool.query<R>({ text, values, query_timeout: READ_WAIT_MS } as pg.QueryConfig);
  } catch (error) {
    throw readFailure(what, error);
  }
}
