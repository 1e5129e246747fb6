import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { loadOrCreateSecret } from '../server/data-files.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { repoRoot, type ServerProc, spawnServer } from './helpers/processes.js';
import { REPLICA_START_MS } from './helpers/replicas.js';
import { tempDir } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function health(server: ServerProc): Promise<{ status: number; ready: boolean }> {
  const res = await fetch(`${server.url}/healthz`);
  return { status: res.status, ...((await res.json()) as { ready: boolean }) };
}

async function signingKeyIds(server: ServerProc): Promise<string[]> {
  const res = await fetch(`${server.url}/.well-known/jwks.json`);
  const { keys } = (await res.json()) as { keys: Array<{ kid: string }> };
  return keys.map((k) => k.kid).sort();
}

describe('replicas started at the same moment on an empty database', () => {
  it('all become ready on one schema (each migration once) and one signing key set', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    // The operator gives every replica the same secret before the first start.
    const dataDirs = await Promise.all([tempDir(), tempDir(), tempDir()]);
    await loadOrCreateSecret(join(dataDirs[0]!, 'secret.key'));
    for (const dir of dataDirs.slice(1))
      await copyFile(join(dataDirs[0]!, 'secret.key'), join(dir, 'secret.key'));

    const env = { CONNECTOR_DATABASE_URL: db.url };
    const starting = dataDirs.map((dir) =>
      spawnServer(dir, [], 0, { env, startTimeoutMs: REPLICA_START_MS }),
    );
    const started = await Promise.allSettled(starting);
    for (const s of started) if (s.status === 'fulfilled') cleanups.push(() => s.value.stop('SIGKILL'));
    const replicas = started.map((s) => {
      if (s.status === 'rejected') throw s.reason;
      return s.value;
    });

    for (const replica of replicas) expect(await health(replica)).toMatchObject({ status: 200, ready: true });

    // Each migration ran once, all of them.
    const migrationFiles = (await readdir(join(repoRoot, 'server/store/postgres/migrations'))).filter((f) =>
      f.endsWith('.sql'),
    );
    const applied = await withClient(
      db.url,
      async (c) => (await c.query('SELECT name FROM schema_migrations')).rows,
    );
    expect(applied.map((row: { name: string }) => row.name).sort()).toEqual(
      migrationFiles.map((f) => f.replace(/\.sql$/, '')).sort(),
    );

    // One signing key set, published alike by every replica.
    const kids = await Promise.all(replicas.map(signingKeyIds));
    expect(kids[0]).toHaveLength(1);
    expect(kids[1]).toEqual(kids[0]);
    expect(kids[2]).toEqual(kids[0]);

    // An identity issued through one replica opens a session on each of the others.
    const [a, b, c] = replicas as [ServerProc, ServerProc, ServerProc];
    const adminKey = replicas.find((r) => r.adminKey !== '')?.adminKey ?? '';
    const adminA = createAdminClient({ url: a.url, adminKey });
    const group = await adminA.groups.create.mutate({ name: 'Cold start' });
    const key = (await adminA.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const enrolled = (await enrollSim(a.url, key, 'cold')).enrolled!;
    for (const other of [b, c]) {
      const session = connectSim(other.url, enrolled);
      await session.waitFor('ready', 10_000);
      await session.close();
    }
    // One of them wrote the bootstrap admin key (the others found it in the database); it works on all.
    const written = replicas.filter((r) => r.adminKey !== '');
    expect(written).toHaveLength(1);
    // The others' start line says they have none, and where the deployment's keys are.
    for (const replica of replicas)
      expect(replica.output()).toMatch(
        replica.adminKey !== ''
          ? /listening on \S+; admin key file: /
          : /listening on \S+; no admin key file here \(.*\): the deployment's admin keys are in its database; copy the first replica's admin\.key/,
      );
    for (const replica of replicas) {
      const keys = await createAdminClient({ url: replica.url, adminKey }).apiKeys.list.query({});
      expect(keys.filter((k) => k.kind === 'admin').map((k) => k.name)).toEqual(['bootstrap']);
    }
  });
});
