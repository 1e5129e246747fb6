import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { type AgentProc, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { serverCli } from './helpers/cli.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { realTimeClock, startTestServer, tempDir } from './helpers/server.js';

const tableCount = (url: string) =>
  withClient(url, async (c) =>
    Number(
      (await c.query(`SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'`))
        .rows[0].n,
    ),
  );

describe('connector-server import (an embedded deployment into PostgreSQL)', () => {
  it('copies records, audit log and signing keys into an empty database; a replica on it takes the old agent back without a new enrollment', async () => {
    await using db = await freshDatabase();
    const env = { CONNECTOR_DATABASE_URL: db.url };
    const embedded = await startTestServer({ clock: realTimeClock() });
    const agentDir = await tempDir('ce-import-agent-');
    const replicaDir = await tempDir('ce-import-replica-');
    let agent: AgentProc | null = null;
    try {
      const group = await embedded.admin.groups.create.mutate({ name: 'Moved' });
      await embedded.admin.groups.create.mutate({ name: 'Quiet', description: 'no agents' });
      // A rotated-in key that is not yet active: every key of the file must reach the database.
      await embedded.admin.signingKeys.rotate.mutate({ activateInSeconds: 86_400 });
      const key = (await embedded.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      agent = spawnAgent(['--server', embedded.url, '--key', key, '--name', 'mover'], agentDir);
      const before = await waitConnected(embedded.admin, 'mover');
      const keysBefore = (await embedded.admin.signingKeys.list.query({})).map((k) => `${k.kid}:${k.state}`);
      const eventsBefore = await embedded.admin.audit.list.query({ limit: 1000 });
      expect(eventsBefore.map((e) => e.type)).toContain('enrollment.succeeded');

      // Refused while the server holds the data dir: one line, exit 2, nothing written.
      const locked = await serverCli(['import', '--data-dir', embedded.dataDir], env);
      expect(locked.code).toBe(2);
      expect(locked.stderr.trim().split('\n')).toHaveLength(1);
      expect(locked.stderr).toMatch(/^error: DATA_DIR_LOCKED: .*: stop the server first/);
      expect(await tableCount(db.url)).toBe(0);

      await embedded.stop();
      const imported = await serverCli(['import', '--data-dir', embedded.dataDir], env);
      expect(imported.code, imported.stderr).toBe(0);
      expect(imported.stderr).toMatch(/^records: 6 of 6$/m); // 2 groups, 2 keys, 1 connector, 1 admin key
      expect(imported.stderr).toMatch(new RegExp(`^audit events: ${eventsBefore.length}$`, 'm'));
      expect(imported.stdout.trim().split('\n')).toEqual([
        expect.stringMatching(
          new RegExp(
            `^imported ${embedded.dataDir} into PostgreSQL at 127\\.0\\.0\\.1:\\d+/\\w+: 2 group\\(s\\), 2 provisioning key\\(s\\), ` +
              `1 connector\\(s\\), 1 admin key\\(s\\), ${eventsBefore.length} audit event\\(s\\), 2 signing key\\(s\\) sealed with `,
          ),
        ),
      ]);
      expect(imported.stdout).not.toContain(db.url);

      // A second import finds the database taken.
      const again = await serverCli(['import', '--data-dir', embedded.dataDir], env);
      expect(again.code).toBe(2);
      expect(again.stderr.trim()).toMatch(
        /^error: the database at 127\.0\.0\.1:\d+\/\w+ is not empty \(6 record\(s\), \d+ audit event\(s\), 1 sealed document\(s\)\): import only into a new, empty database \(createdb\); nothing was written$/,
      );

      // A replica on the database, with the data dir's secret and the bootstrap admin key (in the
      // database since the import), where the old server listened: the agent comes back by itself.
      await copyFile(join(embedded.dataDir, 'admin.key'), join(replicaDir, 'admin.key'));
      await using replica = await startTestServer({
        clock: realTimeClock(),
        dataDir: replicaDir,
        config: {
          databaseUrl: db.url,
          secretFile: join(embedded.dataDir, 'secret.key'),
          port: embedded.server.port,
        },
      });
      const after = await waitConnected(replica.admin, 'mover', 30_000);
      expect(after.id).toBe(before.id);
      expect((await readIdentity(agentDir))?.connectorId).toBe(before.id);
      expect((await replica.admin.provisioningKeys.get.query({ groupId: group.id })).enrollments).toBe(1);
      // The provisioning key is readable with the same secret, and still the one that enrolled it.
      expect((await replica.admin.provisioningKeys.get.query({ groupId: group.id })).key).toBe(key);
      expect((await replica.admin.groups.list.query({})).map((g) => g.name).sort()).toEqual([
        'Moved',
        'Quiet',
      ]);
      expect((await replica.admin.signingKeys.list.query({})).map((k) => `${k.kid}:${k.state}`)).toEqual(
        keysBefore,
      );
      const eventsAfter = await replica.admin.audit.list.query({ limit: 1000 });
      const ids = new Set(eventsAfter.map((e) => e.id));
      expect(eventsBefore.filter((e) => !ids.has(e.id))).toEqual([]);
      expect(eventsAfter.find((e) => e.type === 'database.imported')).toMatchObject({
        security: true,
        details: { dataDir: embedded.dataDir, auditEvents: eventsBefore.length, signingKeys: 2 },
      });
      agent.kill('SIGTERM');
      await agent.exited;
      agent = null;
      // A replica started on the old server's data dir says that its store.json is not read.
      await replica.stop();
      const warnings: string[] = [];
      await using onOldDir = await startTestServer({
        clock: realTimeClock(),
        dataDir: embedded.dataDir,
        config: { databaseUrl: db.url, secretFile: join(embedded.dataDir, 'secret.key') },
        logger: pino(
          { level: 'warn' },
          { write: (line: string) => void warnings.push(JSON.parse(line).msg) },
        ),
      });
      expect(warnings).toContainEqual(
        expect.stringContaining("this data dir holds a single server's store.json"),
      );
      await onOldDir.stop();
      // That dir is a replica's now: imported again it would bring back what was revoked since.
      await using other = await freshDatabase();
      const reimport = await serverCli(['import', '--data-dir', embedded.dataDir], {
        CONNECTOR_DATABASE_URL: other.url,
      });
      expect(reimport.code).toBe(2);
      expect(reimport.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(
          /^error: data dir .* is a replica's \(replica\.json\): its state is in the PostgreSQL database at 127\.0\.0\.1:\d+\/\w+, .*pg_dump and pg_restore/,
        ),
      ]);
      expect(await tableCount(other.url)).toBe(0);
    } finally {
      agent?.kill('SIGKILL');
      await embedded[Symbol.asyncDispose]();
      await rm(agentDir, { recursive: true, force: true });
    }
  }, 180_000);

  it('refuses a store.json with a record of the wrong shape (hand-edited): one line naming it, nothing imported', async () => {
    await using db = await freshDatabase();
    const embedded = await startTestServer();
    const group = await embedded.admin.groups.create.mutate({ name: 'Edited' });
    await embedded.stop();
    const file = join(embedded.dataDir, 'store.json');
    const store = JSON.parse(await readFile(file, 'utf8'));
    store.groups[group.id].status = 'zzz';
    await writeFile(file, JSON.stringify(store));
    const refused = await serverCli(['import', '--data-dir', embedded.dataDir], {
      CONNECTOR_DATABASE_URL: db.url,
    });
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(
      new RegExp(
        `^error: .*store\\.json holds a record this server cannot use: groups record "${group.id}": status: .*Nothing was imported$`,
      ),
    );
    expect(await tableCount(db.url)).toBe(0);
    await rm(embedded.dataDir, { recursive: true, force: true });
  });

  it('refuses a data dir with no state and a missing database URL, in one line each (exit 2)', async () => {
    const empty = await tempDir('ce-import-empty-');
    try {
      const noUrl = await serverCli(['import', '--data-dir', empty], { CONNECTOR_DATABASE_URL: '' });
      expect(noUrl.code).toBe(2);
      expect(noUrl.stderr.trim()).toBe(
        'error: name the database to import into: --database-url postgres://… or CONNECTOR_DATABASE_URL',
      );
      // A bad URL is named where it was given.
      const fromEnv = await serverCli(['import', '--data-dir', empty], {
        CONNECTOR_DATABASE_URL: 'postgres://u:p@127.0.0.1:5432',
      });
      expect([fromEnv.code, fromEnv.stderr.trim()]).toEqual([
        2,
        'error: CONNECTOR_DATABASE_URL: the URL names no database: end it with /DATABASE, a database of its own (createdb connector)',
      ]);
      const fromFlag = await serverCli(['import', '--data-dir', empty, '--database-url', 'mysql://h/d']);
      expect([fromFlag.code, fromFlag.stderr.trim()]).toEqual([
        2,
        'error: --database-url: use a postgres:// URL (got mysql://…)',
      ]);
      await using db = await freshDatabase();
      const nothing = await serverCli(['import', '--data-dir', empty, '--database-url', db.url]);
      expect(nothing.code).toBe(2);
      expect(nothing.stderr.trim()).toBe(
        `error: ${empty} holds no store.json: nothing to import (give the data dir of a server that has run)`,
      );
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
