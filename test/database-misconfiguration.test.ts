import { existsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../scripts/lib/processes.js';
import { serverCli } from './helpers/cli.js';
import { freshDatabase, migrateFirst, sharedClusterUrl, withClient } from './helpers/postgres.js';
import { spawnTs } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/**
 * What an operator gets for a --database-url that cannot serve: one line naming the database (never
 * the password), why, and what to do; the database as it was (nothing written in someone else's).
 */
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function dir(): Promise<string> {
  const made = await tempDir('ce-dbconf-');
  cleanups.push(() => rm(made, { recursive: true, force: true }));
  return made;
}

/** `serve` that must stop at start: its exit code and its output's lines. */
async function refusedStart(databaseUrl: string, dataDir?: string) {
  const proc = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir ?? (await dir()), '--port', '0'], {
    env: { ...process.env, CONNECTOR_DATABASE_URL: databaseUrl },
  });
  cleanups.push(() => proc.stop());
  const { code } = await proc.exited;
  return { code, lines: proc.output().trim().split('\n') };
}

const tablesOf = (url: string) =>
  withClient(url, async (c) =>
    (
      await c.query<{ t: string }>(
        `SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`,
      )
    ).rows.map((row) => row.t),
  );

/** `url` with `user` and `password` in place of the URL's own. */
function as(url: string, user: string, password: string): string {
  const u = new URL(url);
  u.username = user;
  u.password = password;
  return u.toString();
}

describe('a --database-url that cannot serve: one line, and the database left as it was', () => {
  it('refuses a URL that names no database (PostgreSQL would pick the maintenance database)', async () => {
    await using db = await freshDatabase();
    const noDatabase = new URL(db.url);
    noDatabase.pathname = '';
    const serve = await refusedStart(noDatabase.toString());
    expect(serve.code).toBe(2);
    expect(serve.lines).toEqual([
      'error: CONNECTOR_DATABASE_URL: the URL names no database: end it with /DATABASE, a database of its own (createdb connector)',
    ]);
    const imported = await serverCli(['import', '--data-dir', await dir()], {
      CONNECTOR_DATABASE_URL: noDatabase.toString(),
    });
    expect(imported.code).toBe(2);
    expect(imported.stderr).toContain('CONNECTOR_DATABASE_URL: the URL names no database');
  });

  it("refuses another application's database, for serve and import, and writes nothing in it", async () => {
    await using db = await freshDatabase();
    await withClient(db.url, async (c) => {
      await c.query('CREATE TABLE users (id int PRIMARY KEY, name text)');
      await c.query('CREATE TABLE orders (id int PRIMARY KEY)');
      await c.query(`INSERT INTO users VALUES (1, 'ada')`);
    });
    const serve = await refusedStart(db.url);
    // A configuration problem: exit 2, which the shipped unit does not restart every 2 s.
    expect(serve.code).toBe(2);
    expect(serve.lines).toEqual([
      expect.stringMatching(
        /^error: cannot start: PostgreSQL at 127\.0\.0\.1:\d+\/\w+ cannot be used: it holds another application's tables \(orders, users\) and none of this server's: give the server a database of its own \(createdb connector\)$/,
      ),
    ]);
    await using single = await startTestServer();
    await single.stop();
    const imported = await serverCli(['import', '--data-dir', single.dataDir], {
      CONNECTOR_DATABASE_URL: db.url,
    });
    expect(imported.code).toBe(2);
    expect(imported.stderr).toContain("it holds another application's tables (orders, users)");
    expect(await tablesOf(db.url)).toEqual(['orders', 'users']);
    // Another tool's migrations table of the same name (Rails has one) is not taken for ours.
    await withClient(db.url, (c) => c.query('CREATE TABLE schema_migrations (version text PRIMARY KEY)'));
    const rails = await refusedStart(db.url);
    expect(rails.code).toBe(2);
    expect(rails.lines).toEqual([
      expect.stringContaining(
        "its schema_migrations table is another tool's (no name and run_on columns): give the server a database of its own",
      ),
    ]);
    expect(await tablesOf(db.url)).toEqual(['orders', 'schema_migrations', 'users']);
  });

  it('refuses a database a newer version migrated, naming the migrations this one does not know', async () => {
    await using db = await freshDatabase();
    await withClient(db.url, async (c) => {
      await migrateFirst(c, Number.POSITIVE_INFINITY);
      await c.query(
        `INSERT INTO schema_migrations (name, run_on) VALUES ('1799999999999_future-thing', now())`,
      );
    });
    const serve = await refusedStart(db.url);
    expect(serve.code).toBe(2);
    expect(serve.lines).toEqual([
      expect.stringMatching(
        /cannot be used: a newer version of connector-server migrated it \(migrations this version does not know: 1799999999999_future-thing\): run that version or a later one here, not this one$/,
      ),
    ]);
    // Nothing of this replica's made it in.
    expect(
      await withClient(db.url, async (c) =>
        Number((await c.query('SELECT count(*) AS n FROM replicas')).rows[0].n),
      ),
    ).toBe(0);
  });

  it('a user without the privileges the schema needs: one line with the SQLSTATE and the fix, no stack', async () => {
    await using db = await freshDatabase();
    const user = `ce_weak_${Date.now().toString(36)}`;
    await withClient(db.url, async (c) => {
      await c.query(`CREATE ROLE ${user} LOGIN PASSWORD 'weak-password'`);
      await c.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
    });
    // Roles are the cluster's: dropped once the test's database (holding its grants) is gone.
    cleanups.push(() => withClient(sharedClusterUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${user}`)));
    const weak = as(db.url, user, 'weak-password');
    // Cannot create the tables.
    const cannotCreate = await refusedStart(weak);
    expect(cannotCreate.code).toBe(1);
    expect(cannotCreate.lines).toHaveLength(1);
    expect(cannotCreate.lines[0]).toMatch(
      /^error: cannot start: PostgreSQL at .* cannot be used \(42501: .*permission denied for schema public\); the user in the database URL lacks a privilege: it must own the server's tables/,
    );
    expect(cannotCreate.lines[0]).not.toContain('weak-password');
    // The schema made by its owner; this user may read and write every table but the replicas'.
    await withClient(db.url, async (c) => {
      await migrateFirst(c, Number.POSITIVE_INFINITY);
      await c.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${user}`);
      await c.query(`GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO ${user}`);
      await c.query(`REVOKE ALL ON replicas FROM ${user}`);
    });
    const noReplicas = await refusedStart(weak);
    expect(noReplicas.code).toBe(1);
    expect(noReplicas.lines).toEqual([
      expect.stringMatching(
        /^error: cannot start: PostgreSQL at .* cannot be used \(42501: permission denied for table replicas\)/,
      ),
    ]);
  });

  it('sslmode=require against a server without TLS: the reason and the fix, after the client library’s warning in one line', async () => {
    await using db = await freshDatabase();
    const serve = await refusedStart(`${db.url}?sslmode=require`);
    expect(serve.code).toBe(1);
    expect(serve.lines).toEqual([
      expect.stringMatching(
        /^warning: SECURITY WARNING: The SSL modes .* are treated as aliases for 'verify-full'\.$/,
      ),
      expect.stringMatching(
        /^error: cannot start: PostgreSQL at .* cannot be used \(The server does not support SSL connections\); the database server does not accept TLS: enable it there, or take sslmode out of the database URL$/,
      ),
    ]);
  });

  it('a listener that takes the connection and never answers: one line within the connect bound, not a hang', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const port = (silent.address() as { port: number }).port;
    const started = Date.now();
    const serve = await refusedStart(`postgres://u:p@127.0.0.1:${port}/x`);
    expect(serve.code).toBe(1);
    expect(serve.lines).toEqual([
      expect.stringMatching(
        /^error: cannot start: PostgreSQL at 127\.0\.0\.1:\d+\/x cannot be used \(.*timeout.*\); it took the connection but did not answer within 10 s/,
      ),
    ]);
    expect(Date.now() - started).toBeLessThan(30_000);
  }, 60_000);

  it('a refused first start leaves no data dir, secret or lock behind; a dir that was there keeps only its lock', async () => {
    const nobody = `postgresql://connector@127.0.0.1:${await freePort()}/connector`;
    const parent = await dir();
    const fresh = join(parent, 'var', 'connector-server');
    const serve = await refusedStart(nobody, fresh);
    expect(serve.code).toBe(1);
    expect(serve.lines).toEqual([
      expect.stringMatching(/^error: cannot start: PostgreSQL at .*ECONNREFUSED/),
    ]);
    expect(existsSync(join(parent, 'var'))).toBe(false);
    // A dir the operator made: kept, with nothing in it but the lock (no secret nobody can use).
    const existing = join(parent, 'kept');
    await mkdir(existing, { mode: 0o700 });
    expect((await refusedStart(nobody, existing)).code).toBe(1);
    expect(await readdir(existing)).toEqual(['server.lock']);
  });
});
