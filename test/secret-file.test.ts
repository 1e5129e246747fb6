import { randomBytes } from 'node:crypto';
import { access, chown, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { spawnTs } from './helpers/processes.js';
import { tempDir } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function dir(): Promise<string> {
  const made = await tempDir('ce-secret-');
  cleanups.push(() => rm(made, { recursive: true, force: true }));
  return made;
}

/** A secret file as an operator makes one: one base64 32-byte secret, mode 0600. */
async function secretFile(where: string, content = `${randomBytes(32).toString('base64')}\n`, mode = 0o600) {
  const file = join(where, `replica-${randomBytes(3).toString('hex')}.secret`);
  await writeFile(file, content, { mode });
  return file;
}

/** `serve` on `dataDir` with `env` (the database URL and the secret file stay out of argv, as the README says). */
function serve(dataDir: string, env: NodeJS.ProcessEnv, args: string[] = []) {
  return spawnTs(
    'server/main.ts',
    ['serve', '--data-dir', dataDir, '--port', '0', '--log-level', 'warn', ...args],
    {
      env: { ...process.env, ...env },
    },
  );
}

async function started(dataDir: string, env: NodeJS.ProcessEnv) {
  const proc = serve(dataDir, env);
  cleanups.push(() => proc.stop());
  const [, url] = await proc.waitForOutput(/listening on (\S+?);/);
  return url!;
}

/** `serve` that must stop at start: its exit code and what it printed. */
async function refused(env: NodeJS.ProcessEnv, args: string[] = []) {
  const proc = serve(await dir(), env, args);
  const { code } = await proc.exited;
  return { code, lines: proc.output().trim().split('\n') };
}

describe('serve --secret-file (the secret every replica shares)', () => {
  it('replicas given the same file share the secret: a key made through one is read through the other, and no secret.key is made', async () => {
    await using db = await freshDatabase();
    const shared = await secretFile(await dir());
    const [dataA, dataB] = [await dir(), await dir()];
    const urlA = await started(dataA, { CONNECTOR_DATABASE_URL: db.url, CONNECTOR_SECRET_FILE: shared });
    const adminKey = (await readFile(join(dataA, 'admin.key'), 'utf8')).trim();
    const urlB = await started(dataB, { CONNECTOR_DATABASE_URL: db.url, CONNECTOR_SECRET_FILE: shared });
    const a = createAdminClient({ url: urlA, adminKey });
    const b = createAdminClient({ url: urlB, adminKey });
    const group = await a.groups.create.mutate({ name: 'Shared secret' });
    const throughA = await a.provisioningKeys.get.query({ groupId: group.id });
    // B decrypts the stored provisioning key with the secret it was given.
    expect((await b.provisioningKeys.get.query({ groupId: group.id })).key).toBe(throughA.key);
    for (const data of [dataA, dataB])
      await expect(access(join(data, 'secret.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a replica given another secret stops with one line naming --secret-file as the fix', async () => {
    await using db = await freshDatabase();
    await started(await dir(), {
      CONNECTOR_DATABASE_URL: db.url,
      CONNECTOR_SECRET_FILE: await secretFile(await dir()),
    });
    const other = await secretFile(await dir());
    const { code, lines } = await refused({ CONNECTOR_DATABASE_URL: db.url, CONNECTOR_SECRET_FILE: other });
    expect(code).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("this replica's secret differs from the one the database was set up with");
    expect(lines[0]).toContain('--secret-file');
    // Without --secret-file it makes one in its data dir, finds it is not the deployment's, and
    // removes it again: the next start does not trip over it.
    const dataDir = await dir();
    const proc = serve(dataDir, { CONNECTOR_DATABASE_URL: db.url });
    const { code: withoutFile } = await proc.exited;
    expect(withoutFile).toBe(2);
    await expect(access(join(dataDir, 'secret.key'))).rejects.toMatchObject({ code: 'ENOENT' });
    // Nor is the dir marked a replica's of that database: a start without a URL would be refused.
    await expect(access(join(dataDir, 'replica.json'))).rejects.toMatchObject({ code: 'ENOENT' });
    // A data dir this refused start made is removed whole, as the README says.
    const made = join(await dir(), 'made-by-the-start');
    const fresh = serve(made, { CONNECTOR_DATABASE_URL: db.url, CONNECTOR_SECRET_FILE: other });
    expect((await fresh.exited).code).toBe(2);
    await expect(access(made)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a file open to other users, empty, damaged or missing, and without --database-url: one line, exit 2, no secret in it', async () => {
    await using db = await freshDatabase();
    const where = await dir();
    const secret = randomBytes(32).toString('base64');
    const cases: Array<[string, string, RegExp]> = [
      [
        'readable by others',
        await secretFile(where, `${secret}\n`, 0o644),
        /is open to other users \(mode 0644\); .*chmod 600/,
      ],
      [
        'readable by the group',
        await secretFile(where, `${secret}\n`, 0o640),
        /is open to other users \(mode 0640\)/,
      ],
      ['empty', await secretFile(where, '\n'), /is empty; /],
      [
        'damaged',
        await secretFile(where, `${secret.slice(0, 20)}\n`),
        /is damaged \(it must hold one base64 32-byte secret/,
      ],
      ['missing', join(where, 'nothing-here'), /does not exist; copy secret.key/],
      ['a directory', where, /is a directory; give the path of the secret file itself/],
    ];
    // Owned by another user (who could swap the secret): only root can make such a file here.
    if (process.getuid?.() === 0) {
      const foreign = await secretFile(where, `${secret}\n`);
      await chown(foreign, 65534, 65534);
      cases.push([
        'owned by another user',
        foreign,
        /is owned by another user \(uid 65534\), who could replace it; .*chown 0 /,
      ]);
    }
    for (const [name, file, problem] of cases) {
      const { code, lines } = await refused({ CONNECTOR_DATABASE_URL: db.url, CONNECTOR_SECRET_FILE: file });
      expect(code, name).toBe(2);
      expect(lines, name).toHaveLength(1);
      expect(lines[0], name).toMatch(new RegExp(`^error: cannot start: --secret-file ${file}: `));
      expect(lines[0], name).toMatch(problem);
      expect(lines[0], name).not.toContain(secret.slice(0, 20));
    }
    // The secret is read before the database is touched: the refused starts made no tables.
    const tables = await withClient(db.url, (c) => c.query(`SELECT to_regclass('store_records') AS t`));
    expect(tables.rows[0].t).toBeNull();
    const alone = await refused({}, ['--secret-file', await secretFile(where)]);
    expect(alone.code).toBe(2);
    expect(alone.lines).toEqual([
      'error: --secret-file goes with --database-url (replicas share one secret); a server without a database keeps its secret in <data-dir>/secret.key',
    ]);
  });
});
