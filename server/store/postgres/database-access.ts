import type pg from 'pg';

/**
 * Whether every role of the PostgreSQL cluster may connect to this database (PUBLIC holds CONNECT,
 * as it does on a database CREATE DATABASE just made). LISTEN and NOTIFY take no privilege of their
 * own, so any role that can connect can read the replicas' notifications (connector ids, agents'
 * addresses) and send its own; the replicas check what a notification would change in the tables,
 * which only their role may read, but the fix is to let no other role in.
 */
export async function connectableByEveryRole(
  pool: Pick<pg.Pool, 'query'>,
): Promise<{ open: boolean; database: string; user: string }> {
  const { rows } = await pool.query<{ open: boolean; database: string; user: string }>(
    `SELECT has_database_privilege('public', current_database(), 'CONNECT') AS open,
            current_database() AS database, current_user AS "user"`,
  );
  const row = rows[0];
  return { open: row?.open === true, database: row?.database ?? '', user: row?.user ?? '' };
}

/** The start-up warning for connectableByEveryRole, with the statements that fix it. */
export function everyRoleWarning(database: string, user: string): string {
  const db = quoteIdentifier(database);
  return (
    `every role of this PostgreSQL cluster may connect to database ${database} (PUBLIC has CONNECT): ` +
    `any of them can listen to the replicas' notifications (connector ids, agent addresses) and send forged ones. ` +
    `Fix, as a superuser or the database's owner: REVOKE CONNECT ON DATABASE ${db} FROM PUBLIC; ` +
    `GRANT CONNECT ON DATABASE ${db} TO ${quoteIdentifier(user)};`
  );
}

/**
 * Says, at most once per `everyMs`, that notifications no replica sent were dropped (with how many
 * since the last time): a sign that another role is notifying on the database's channels.
 */
export function malformedNotificationNotice(
  warn: (details: object, message: string) => void,
  now: () => number,
  everyMs = 60_000,
): (channel: string) => void {
  let saidAt = Number.NEGATIVE_INFINITY;
  let dropped = 0;
  return (channel) => {
    dropped++;
    if (now() - saidAt < everyMs) return;
    warn(
      { channel, dropped },
      'dropped notifications no replica sent (out of shape): another role may be notifying on this database: let no other role connect (README, "Run replicas")',
    );
    saidAt = now();
    dropped = 0;
  };
}

function quoteIdentifier(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}

/**
 * A warning for a URL that reaches a database on another host without asking for TLS (no `sslmode`
 * or `ssl` parameter): the password and every record would cross the network in clear. Null for a
 * loopback or Unix-socket database, or a URL that chose.
 */
export function plaintextWarning(url: string): string | null {
  const parsed = new URL(url);
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  const local =
    host === '' || host === 'localhost' || host === '::1' || host.startsWith('127.') || host.startsWith('/');
  if (local || parsed.searchParams.has('sslmode') || parsed.searchParams.has('ssl')) return null;
  return (
    `the database URL names ${host} without sslmode: the connection is not encrypted, and the password and records cross the network in clear. ` +
    'Add ?sslmode=verify-full (with &sslrootcert=/path/to/ca.pem unless its certificate is publicly trusted), or sslmode=disable to say that is intended'
  );
}
