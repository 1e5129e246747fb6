import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { NOT_READY_HEADER } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { serverCli } from './helpers/cli.js';
import { startPostgres, withClient } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

async function health(server: TestServer): Promise<{ status: number; ready: boolean; problems?: string[] }> {
  const res = await fetch(`${server.url}/healthz`);
  return { status: res.status, ...((await res.json()) as { ready: boolean; problems?: string[] }) };
}

describe('replicas when PostgreSQL goes away and comes back', () => {
  it('go not-ready, keep their sessions (--when-cut-off keep-sessions), refuse new ones and changes; recover by themselves with nothing acknowledged lost', async () => {
    // A cluster of its own: stopping the shared one would take every other test's database with it.
    await using pg = await startPostgres();
    await withClient(pg.url, (c) => c.query('CREATE DATABASE outage'));
    const url = new URL(pg.url);
    url.pathname = '/outage';
    // B's log, as an operator reads it: the outage's start, its end, not every retry.
    const logOfB: Array<{ level: number; msg: string }> = [];
    // Sessions kept however long the outage lasts (the default ends them after 12 s:
    // replica-cut-off.test.ts), so that a revoke after it still finds the one B kept.
    const servers = await startReplicas(url.toString(), 2, {
      config: { whenCutOff: 'keep-sessions' },
      loggerOf: (index) =>
        index === 1
          ? pino({ level: 'info' }, { write: (line: string) => void logOfB.push(JSON.parse(line)) })
          : undefined,
    });
    try {
      const [a, b] = servers as [TestServer, TestServer];
      const group = await a.admin.groups.create.mutate({ name: 'Before' });
      const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
      const kept = (await enrollSim(b.url, key, 'kept')).enrolled!;
      const later = (await enrollSim(b.url, key, 'later')).enrolled!;
      const cut = (await enrollSim(b.url, key, 'cut')).enrolled!;
      const session = connectSim(b.url, kept);
      const cutSession = connectSim(b.url, cut);
      await Promise.all([session.waitFor('ready'), cutSession.waitFor('ready')]);
      expect((await health(a)).status).toBe(200);

      await pg.stop();
      for (const replica of [a, b])
        await eventually('not ready', async () => (await health(replica)).status === 503, 20_000);
      const down = await health(b);
      expect(down.ready).toBe(false);
      expect(down.problems?.length).toBeGreaterThan(0);
      // With the database's own reason, as the log has it: its code, not its address, which anyone
      // who can reach /healthz would learn. The change feed's listener may be the first to notice
      // (its end carries no code); the heartbeat's failure, with the code, follows within seconds.
      const coded = await eventually(
        'the database’s code among the problems',
        async () => {
          const now = await health(b);
          return /\((ECONNREFUSED|ECONNRESET|57P01|57P03)\)/.test(now.problems?.join(' ') ?? '')
            ? now
            : undefined;
        },
        20_000,
      );
      expect(coded.ready).toBe(false);
      for (const seen of [down, coded]) expect(JSON.stringify(seen)).not.toContain(`:${url.port}`);
      // Its live session stays; a new one is refused (503 at the upgrade, so it never opens).
      expect(session.closes).toEqual([]);
      const refused = connectSim(b.url, later);
      await refused.waitForClose(10_000);
      expect(refused.events.some((e) => e.type === 'ready')).toBe(false);
      // A change cannot be made, and says why.
      await expect(a.admin.groups.create.mutate({ name: 'During' })).rejects.toMatchObject({
        data: { reason: 'STORE_UNAVAILABLE' },
      });
      // A revoke through the replica holding the session ends it at once and says it was not saved,
      // with the session it ended: the audit log, unreachable too, does not answer in its place.
      await expect(b.admin.connectors.revoke.mutate({ connectorId: cut.connectorId })).rejects.toMatchObject({
        data: { reason: 'REVOKE_NOT_SAVED', sessionsEnded: 1 },
      });
      expect(await cutSession.waitForClose()).toEqual({ code: 4003, reason: 'CONNECTOR_REVOKED' });
      // The reads that need the database say so too (the replicas list, the audit log): an operator
      // runs them exactly now, and they used to answer INTERNAL_ERROR.
      await expect(a.admin.replicas.list.query({})).rejects.toMatchObject({
        message: expect.stringMatching(/^The list of replicas could not be read from the database \(/),
        data: { reason: 'STORE_UNAVAILABLE' },
      });
      await expect(b.admin.audit.list.query({ limit: 5 })).rejects.toMatchObject({
        message: expect.stringMatching(/^The audit log could not be read from the database \(/),
        data: { reason: 'STORE_UNAVAILABLE' },
      });

      // Reads still answer, from memory, and say what they are worth: the header on every answer, and
      // the CLI's warning on stderr beside its normal output.
      const listOfB = () =>
        fetch(`${b.url}/trpc/groups.list`, { headers: { authorization: `Bearer ${b.adminKey}` } });
      const stale = await listOfB();
      expect(stale.status).toBe(200);
      expect(stale.headers.get(NOT_READY_HEADER)).toMatch(/change feed|heartbeat/);
      const cliDuring = await serverCli(['groups', 'list', '--server', b.url], {
        CONNECTOR_ADMIN_KEY: b.adminKey,
      });
      expect(cliDuring.code, cliDuring.stderr).toBe(0);
      expect(cliDuring.stdout).toContain('Before');
      expect(cliDuring.stderr).toMatch(
        new RegExp(
          `^warning: ${b.url} is not ready \\(.+\\): it answers from its memory, which may miss changes made through other replicas since; see its /healthz\\n$`,
        ),
      );

      await pg.start();
      for (const replica of [a, b])
        await eventually('ready again', async () => (await health(replica)).status === 200, 60_000);
      await eventually(
        'B says the database answers again',
        async () => logOfB.some((l) => l.msg === 'PostgreSQL answers again'),
        30_000,
      );
      const outage = logOfB.slice(logOfB.findIndex((l) => l.msg.startsWith('PostgreSQL cannot be used')));
      expect(
        outage.filter((l) => l.level >= 50),
        JSON.stringify(outage, null, 1),
      ).toHaveLength(1); // one error: the start
      // Then at most a line a minute about it (this outage lasts seconds), and its end.
      expect(outage.filter((l) => l.msg === 'PostgreSQL still failing').length).toBeLessThanOrEqual(1);
      // Everything acknowledged before is there, nothing refused was half-made.
      const names = (await b.admin.groups.list.query({})).map((g) => g.name);
      expect(names).toContain('Before');
      expect(names).not.toContain('During');
      expect((await listOfB()).headers.get(NOT_READY_HEADER)).toBeNull();
      const cliAfter = await serverCli(['groups', 'list', '--server', b.url], {
        CONNECTOR_ADMIN_KEY: b.adminKey,
      });
      expect([cliAfter.code, cliAfter.stderr]).toEqual([0, '']);
      // And the replicas are live again: a revoke through A reaches the session B kept.
      await a.admin.connectors.revoke.mutate({ connectorId: kept.connectorId });
      await session.waitFor('revoked', 10_000);
      const again = connectSim(b.url, later);
      await again.waitFor('ready', 10_000);
      await again.close();
    } finally {
      await stopAll(servers);
    }
  });
});
