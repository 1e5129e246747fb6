/**
 * Where a database URL points, as host:port/database: for messages and files (never the password).
 * Apart from the rest of the PostgreSQL code so that a server without a database can say so without
 * loading `pg`.
 */
export function databaseLocation(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return 'the --database-url';
  }
}
