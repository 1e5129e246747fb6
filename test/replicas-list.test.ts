import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import pkg from '../package.json' with { type: 'json' };
import { createAdminClient } from '../server/admin-client.js';
import { connectSim, enrollSim, type SimSession } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import type { ServerProc } from './helpers/processes.js';
import { spawnReplicas } from './helpers/replicas.js';
import { startTestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Real agent sessions (simulated agents over real websockets) on `replica`, `count` of them. */
async function sessionsOn(replica: ServerProc, key: string, count: number): Promise<SimSession[]> {
  const sessions: SimSession[] = [];
  for (let i = 0; i < count; i++) {
    const enrolled = (await enrollSim(replica.url, key, `on-${replica.port}-${i}`)).enrolled!;
    sessions.push(connectSim(replica.url, enrolled));
  }
  await Promise.all(sessions.map((s) => s.waitFor('ready', 10_000)));
  cleanups.push(() => Promise.all(sessions.map((s) => s.close())));
  return sessions;
}

describe('replicas.list and `connector-server replicas`', () => {
  it('three replica processes on one PostgreSQL: each listed with its URL, host, pid, version, heartbeat and sessions, through any of them and the CLI', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const replicas = await spawnReplicas(db.url, 3);
    cleanups.push(() => Promise.allSettled(replicas.map((r) => r.stop('SIGKILL'))));
    const [a, b, c] = replicas as [ServerProc, ServerProc, ServerProc];
    const admin = createAdminClient({ url: a.url, adminKey: a.adminKey });
    const group = await admin.groups.create.mutate({ name: 'Listed' });
    const key = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    await sessionsOn(a, key, 2);
    await sessionsOn(b, key, 1);

    // Claims go out within ~50 ms of each session's start: bounded wait for the table to hold them.
    const viaC = createAdminClient({ url: c.url, adminKey: a.adminKey });
    const countsByUrl = async () => {
      const view = await viaC.replicas.list.query({});
      return Object.fromEntries(view.replicas.map((r) => [r.url, r.sessions]));
    };
    for (let i = 0; i < 100; i++) {
      const counts = await countsByUrl();
      if (counts[a.url] === 2 && counts[b.url] === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }

    // Each replica writes its readiness with its heartbeat: ready by the first one after start-up.
    await expect
      .poll(async () => (await viaC.replicas.list.query({})).replicas.map((r) => r.ready), {
        timeout: 12_000,
      })
      .toEqual([true, true, true]);
    const view = await viaC.replicas.list.query({});
    expect(view).toMatchObject({ backend: 'postgres', deadAfterMs: 15_000, sessions: 3 });
    // A started alone, first; B and C together after it.
    expect(view.replicas[0]!.url).toBe(a.url);
    expect(new Set(view.replicas.map((r) => r.url))).toEqual(new Set([a.url, b.url, c.url]));
    for (const replica of replicas) {
      const row = view.replicas.find((r) => r.url === replica.url)!;
      expect(row).toMatchObject({
        host: hostname(),
        pid: replica.pid,
        version: pkg.version,
        state: 'live',
        ready: true,
        problems: [],
        self: replica === c,
        sessions: replica === a ? 2 : replica === b ? 1 : 0,
      });
      expect(row.heartbeatAgeMs).toBeGreaterThanOrEqual(0);
      expect(row.heartbeatAgeMs).toBeLessThan(15_000);
      expect(Date.parse(row.startedAt)).toBeLessThanOrEqual(Date.parse(row.heartbeatAt!));
    }
    // The same list through A, where A is the one that answers; and with a read-only key.
    const reader = await admin.apiKeys.create.mutate({ name: 'watcher', scope: 'read' });
    const viaA = await createAdminClient({ url: a.url, adminKey: reader.key }).replicas.list.query({});
    expect(viaA.replicas.map((r) => r.id)).toEqual(view.replicas.map((r) => r.id));
    expect(viaA.replicas.filter((r) => r.self).map((r) => r.url)).toEqual([a.url]);

    // Each replica's /metrics counts the live ones from its heartbeat's read (every 5 s): A started
    // alone and counted 1 then, and B and C started together (each may have read the table before
    // the other was in it); each one's next heartbeat sees all three.
    const liveOn = async (replica: ServerProc) =>
      /^connector_replicas_live (\d+)$/m.exec(await (await fetch(`${replica.url}/metrics`)).text())?.[1];
    for (const replica of replicas)
      await expect.poll(() => liveOn(replica), { timeout: 12_000, interval: 200 }).toBe('3');

    // The CLI as an operator runs it, against B.
    const keyFile = join(a.dataDir, 'admin.key');
    const table = await serverCli(['replicas', '--server', b.url, '--admin-key-file', keyFile]);
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
    for (const row of view.replicas) {
      const line = table.stdout.split('\n').find((l) => l.includes(row.id.slice(0, 8)))!;
      expect(line).toContain(row.url!);
      expect(line).toContain(String(row.pid));
      expect(line.includes('* ')).toBe(row.url === b.url);
    }
    expect(table.stdout).toContain('3 live replicas; 3 agent sessions.');

    // Which replica holds each session: asked of the one that holds none (C), in the API and the CLI.
    const idOf = (replica: ServerProc) => view.replicas.find((r) => r.url === replica.url)!.id;
    const holders = [
      [`on-${a.port}-0`, idOf(a)],
      [`on-${a.port}-1`, idOf(a)],
      [`on-${b.port}-0`, idOf(b)],
    ];
    await expect
      .poll(async () => (await viaC.connectors.list.query({})).items.map((i) => [i.name, i.replica]).sort(), {
        timeout: 5_000,
      })
      .toEqual(holders.sort());
    const listed = await serverCli(['connectors', 'list', '--server', c.url, '--admin-key-file', keyFile]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/CONNECTION\W+REPLICA/);
    for (const [name, id] of holders) {
      const line = listed.stdout.split('\n').find((l) => l.includes(`${name} `))!;
      expect(line).toContain(` ${id!.slice(0, 8)} `);
    }
    const got = await serverCli([
      'connectors',
      'get',
      `on-${b.port}-0`,
      '--server',
      a.url,
      '--admin-key-file',
      keyFile,
    ]);
    expect(got.stdout).toMatch(new RegExp(`^replica: +${idOf(b)}$`, 'm'));
    expect(table.stdout).not.toContain('different versions');
    const json = await serverCli(['replicas', '--server', b.url, '--admin-key-file', keyFile, '--json']);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.stdout) as typeof view;
    expect(parsed.replicas.map((r) => [r.id, r.sessions, r.self])).toEqual(
      view.replicas.map((r) => [r.id, r.sessions, r.url === b.url]),
    );

    // A replica of the version before this one (it records no process) is listed all the same, and
    // the CLI points at the mixed versions: an upgrade under way.
    await withClient(db.url, (client) =>
      client.query(
        `INSERT INTO replicas (id, url, started_at, heartbeat_at) VALUES ('old-one', NULL, $1, $1)`,
        [Date.now()],
      ),
    );
    const mixed = await viaC.replicas.list.query({});
    expect(mixed.replicas.at(-1)).toMatchObject({
      id: 'old-one',
      host: null,
      pid: null,
      version: null,
      state: 'live',
      ready: null,
    });
    // And one whose heartbeat said it is not ready (as a replica whose feed fell behind writes it).
    await withClient(db.url, (client) =>
      client.query(
        `INSERT INTO replicas (id, url, started_at, heartbeat_at, version, problems)
         VALUES ('behind-01', NULL, $1, $1, $2, ARRAY['the change feed last read the database 9 s ago'])`,
        [Date.now() + 1, pkg.version],
      ),
    );
    const mixedTable = await serverCli(['replicas', '--server', c.url, '--admin-key-file', keyFile]);
    expect(mixedTable.stdout).toContain(`The replicas run different versions (${pkg.version}, unknown)`);
    expect(mixedTable.stdout).toContain(
      'behind-0 is not ready: the change feed last read the database 9 s ago.',
    );
    expect(mixedTable.stdout).toContain('5 live replicas;');

    // --expect, a monitoring script's check: of the five live ones, behind-01 cannot serve; the older
    // one does not say, and counts.
    const cli = (...extra: string[]) =>
      serverCli(['replicas', '--server', c.url, '--admin-key-file', keyFile, ...extra]);
    expect((await cli('--expect', '4')).code).toBe(0);
    const short = await cli('--expect', '5');
    expect(short.code).toBe(3);
    expect(short.stdout).toContain('5 live replicas;');
    expect(short.stderr).toContain(
      'error: 4 of the 5 expected replicas are live and ready: behind-0 not ready (the change feed last read the database 9 s ago)',
    );
    const shortJson = await cli('--expect', '5', '--json');
    expect(shortJson.code).toBe(3);
    expect(JSON.parse(shortJson.stdout).replicas).toHaveLength(5);
    expect(JSON.parse(shortJson.stderr).error).toMatchObject({
      message: expect.stringContaining('4 of the 5 expected replicas'),
      exitCode: 3,
    });
    expect((await cli('--expect', '0')).code).toBe(2);
  });

  it('one server on the embedded store lists itself alone, with its live sessions and no heartbeat', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Alone' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = (await enrollSim(srv.url, key, 'solo')).enrolled!;
    const session = connectSim(srv.url, enrolled);
    await session.waitFor('ready', 10_000);
    const view = await srv.admin.replicas.list.query({});
    expect(view).toMatchObject({ backend: 'embedded', deadAfterMs: null, sessions: 1 });
    expect(view.replicas).toHaveLength(1);
    expect(view.replicas[0]).toMatchObject({
      self: true,
      url: srv.url,
      host: hostname(),
      pid: process.pid,
      version: pkg.version,
      heartbeatAt: null,
      heartbeatAgeMs: null,
      state: 'live',
      sessions: 1,
    });
    await session.close();
    const cli = await serverCli([
      'replicas',
      '--server',
      srv.url,
      '--admin-key-file',
      srv.server.adminKeyFile,
    ]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('One server on the embedded store');
    const expectOne = ['replicas', '--server', srv.url, '--admin-key-file', srv.server.adminKeyFile];
    expect((await serverCli([...expectOne, '--expect', '1'])).code).toBe(0);
    const expectTwo = await serverCli([...expectOne, '--expect', '2']);
    expect(expectTwo.code).toBe(3);
    expect(expectTwo.stderr).toContain(
      'error: 1 of the 2 expected replicas are live and ready: 1 not listed (stopped, never started, or dead for over 15 s and removed)\n',
    );
    expect(cli.stdout).toContain(srv.url);
    expect(await (await fetch(`${srv.url}/metrics`)).text()).toMatch(/^connector_replicas_live 1$/m);
  });
});
