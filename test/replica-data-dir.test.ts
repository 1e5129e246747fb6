import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { REPLICA_MARKER } from '../server/replica-marker.js';
import { serverCli } from './helpers/cli.js';
import { freshDatabase } from './helpers/postgres.js';
import { spawnTs } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The environment of a shell that lost the replica's settings (sudo, an edited unit file). */
function withoutDatabase(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.CONNECTOR_DATABASE_URL;
  delete env.CONNECTOR_SECRET_FILE;
  return env;
}

/**
 * A replica's data dir holds no state (it is in the database). Restarted without its database URL,
 * a replica used to come up as a new, empty single server on the same address, with signing keys
 * that refused every agent of the deployment, and agents that reached it wiped their identities.
 */
describe("a replica's data dir", () => {
  it('is marked at start; a start without the database URL is refused in one line and makes nothing; backup points to pg_dump; moved away, the dir serves alone', async () => {
    await using db = await freshDatabase();
    const dataDir = await tempDir('ce-replica-dir-');
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const location = `${new URL(db.url).hostname}:${new URL(db.url).port}${new URL(db.url).pathname}`;

    const replica = await startTestServer({ dataDir, config: { databaseUrl: db.url } });
    cleanups.push(() => replica.stop());
    const marker = join(dataDir, REPLICA_MARKER);
    const text = await readFile(marker, 'utf8');
    expect(JSON.parse(text).database).toBe(location);
    expect(text).not.toContain(new URL(db.url).password);
    expect((await stat(marker)).mode & 0o777).toBe(0o600);

    // While the replica runs, an offline backup of its dir says where the state is (it said
    // DATA_DIR_LOCKED and advised an online backup, which a replica refuses).
    const out = join(dataDir, '..', `${dataDir.split('/').pop()}.backup`);
    const running = await serverCli(['backup', '--data-dir', dataDir, '--out', out], withoutDatabase());
    expect(running.code).not.toBe(0);
    expect(running.stderr.trim()).toBe(
      `error: data dir ${dataDir} is a replica's: its state is in the PostgreSQL database at ${location}; back that up with pg_dump (README, "Back up and restore replicas")`,
    );
    expect(existsSync(out)).toBe(false);
    await replica.stop();

    const before = (await readdir(dataDir)).sort();
    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: withoutDatabase(),
    });
    cleanups.push(() => serve.stop());
    const { code } = await serve.exited;
    expect(code).toBe(2);
    expect(serve.output().trim().split('\n')).toEqual([
      `error: cannot start: ${marker}: this data dir is a replica's, of the PostgreSQL database at ${location}, and no database URL was given: start it as before, with --database-url postgres://… (or CONNECTOR_DATABASE_URL) and its --secret-file if it had one. Started without, it would come up as a new, empty server whose keys refuse every agent of the deployment. To run a single server on this dir instead, move ${REPLICA_MARKER} away`,
    ]);
    // No store, no signing keys, no new secret or admin key.
    expect((await readdir(dataDir)).sort()).toEqual(before);
    expect(before).not.toContain('store.json');

    // Started again with its database, it is the same replica, and says which store it uses first.
    const again = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: { ...withoutDatabase(), CONNECTOR_DATABASE_URL: db.url },
    });
    cleanups.push(() => again.stop());
    await again.waitForOutput(/listening on/, 30_000);
    expect(again.output()).toContain(
      `connector-server store: PostgreSQL at ${location} (a replica; data dir ${dataDir})\nconnector-server listening on http://127.0.0.1:`,
    );
    await again.stop();
    expect(existsSync(marker)).toBe(true);

    // Given another database (a mistyped URL, an empty one): refused, or it would be a new deployment.
    await using other = await freshDatabase();
    const elsewhere = `${new URL(other.url).hostname}:${new URL(other.url).port}${new URL(other.url).pathname}`;
    const wrong = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: { ...withoutDatabase(), CONNECTOR_DATABASE_URL: other.url },
    });
    cleanups.push(() => wrong.stop());
    expect((await wrong.exited).code).toBe(2);
    expect(wrong.output().trim().split('\n')).toEqual([
      `error: cannot start: ${marker}: this data dir is a replica's of the PostgreSQL database at ${location}, but the database URL names ${elsewhere}: start it with ${location}'s URL (--database-url or CONNECTOR_DATABASE_URL). If the database moved there on purpose (pg_dump and pg_restore, a new host name), move ${REPLICA_MARKER} away first; for a replica of another deployment, use another --data-dir`,
    ]);
    expect(JSON.parse(await readFile(marker, 'utf8')).database).toBe(location);

    // The operator's way out: the marker moved away, the dir serves as a single server's.
    await rename(marker, `${marker}.moved`);
    const alone = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: withoutDatabase(),
    });
    cleanups.push(() => alone.stop());
    await alone.waitForOutput(/listening on/, 30_000);
    expect(alone.output()).toContain(`connector-server store: embedded, in ${dataDir}\n`);
    expect(existsSync(join(dataDir, 'store.json'))).toBe(true);
  });

  it("a single server's data dir given an empty database (its import skipped) is refused in one line, changing nothing; imported first, it starts", async () => {
    await using db = await freshDatabase();
    const location = `${new URL(db.url).hostname}:${new URL(db.url).port}${new URL(db.url).pathname}`;
    const single = await startTestServer();
    cleanups.push(() => rm(single.dataDir, { recursive: true, force: true }));
    await single.admin.groups.create.mutate({ name: 'Before the move' });
    await single.stop();
    const dataDir = single.dataDir;
    const files = async () =>
      Object.fromEntries(
        await Promise.all(
          (await readdir(dataDir))
            .filter((name) => name !== 'server.lock') // the pid of the start that held the dir last
            .sort()
            .map(async (name) => [name, await readFile(join(dataDir, name), 'utf8')]),
        ),
      );
    const before = await files();

    // It came up as a new, empty deployment on the old server's address: new signing keys that
    // refused every agent, the admin.key put aside, and replica.json, so the old server no longer started.
    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: { ...withoutDatabase(), CONNECTOR_DATABASE_URL: db.url },
    });
    cleanups.push(() => serve.stop());
    expect((await serve.exited).code).toBe(2);
    expect(serve.output().trim().split('\n')).toEqual([
      `error: cannot start: ${join(dataDir, 'store.json')}: this data dir holds a single server's state, and the PostgreSQL database at ${location} holds none: copy it in first, with the server stopped: connector-server import --data-dir ${dataDir} (README, "Move a single server to replicas"). Started so, the replica would be a new, empty deployment whose keys refuse every agent of this one. For a new deployment, give the replica a data dir of its own`,
    ]);
    expect(await files()).toEqual(before);

    // The way the message names: the import takes the database (nothing was written to it), and the
    // replica then starts on the same dir.
    const imported = await serverCli(['import', '--data-dir', dataDir], { CONNECTOR_DATABASE_URL: db.url });
    expect(imported.code, imported.stderr).toBe(0);
    const replica = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: { ...withoutDatabase(), CONNECTOR_DATABASE_URL: db.url },
    });
    cleanups.push(() => replica.stop());
    await replica.waitForOutput(/listening on/, 30_000);
    expect(existsSync(join(dataDir, REPLICA_MARKER))).toBe(true);
  });

  it("holding an admin.key the deployment does not accept (another's, or one deleted since): said at start, on the listening line too", async () => {
    await using db = await freshDatabase();
    const first = await startTestServer({ config: { databaseUrl: db.url } });
    cleanups.push(() => first.stop());
    const dataDir = await tempDir('ce-replica-key-');
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    // A key made through the first replica, copied here, then deleted.
    const made = await first.admin.apiKeys.create.mutate({ name: 'copied', scope: 'admin' });
    await writeFile(join(dataDir, 'admin.key'), `${made.key}\n`, { mode: 0o600 });
    await first.admin.apiKeys.delete.mutate({ id: made.id });

    const replica = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0'], {
      env: {
        ...withoutDatabase(),
        CONNECTOR_DATABASE_URL: db.url,
        CONNECTOR_SECRET_FILE: join(first.dataDir, 'secret.key'),
      },
    });
    cleanups.push(() => replica.stop());
    await replica.waitForOutput(/listening on/, 30_000);
    expect(replica.output()).toContain(
      `admin key file: ${join(dataDir, 'admin.key')}, which holds no current admin key of this deployment (see the warning)`,
    );
    expect(replica.output()).toContain('admin.key holds no current admin key of this deployment');
    // The file is left as it was: the operator's to replace.
    expect((await readFile(join(dataDir, 'admin.key'), 'utf8')).trim()).toBe(made.key);
  });
});
