import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { freshDatabase, sharedClusterUrl, withClient } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

/**
 * PostgreSQL puts no privilege on LISTEN and NOTIFY: any role that may connect to the database can
 * send on the replicas' channels. Such a role, with no right on any table, must not be able to stop
 * a replica or end an agent's session; a replica says so at start while every role may connect.
 */
describe('notifications from a role that is not a replica', () => {
  it('crash nothing and end no session; a real replacement still does; the start-up warns while PUBLIC may connect', async () => {
    await using db = await freshDatabase();
    const database = new URL(db.url).pathname.slice(1);
    const stranger = `stranger_${randomBytes(4).toString('hex')}`;
    await withClient(sharedClusterUrl(), (c) => c.query(`CREATE ROLE ${stranger} LOGIN PASSWORD 'pw'`));
    const strangerUrl = new URL(db.url);
    strangerUrl.username = stranger;
    strangerUrl.password = 'pw';
    const logOfA: Array<{ level: number; msg: string; dropped?: number }> = [];
    const servers = await startReplicas(db.url, 2, {
      loggerOf: (index) =>
        index === 0
          ? pino({ level: 'info' }, { write: (line: string) => void logOfA.push(JSON.parse(line)) })
          : undefined,
    });
    try {
      const [a, b] = servers as [TestServer, TestServer];
      // A new database lets every role connect: said at start, with the statements that fix it.
      expect(logOfA.map((l) => l.msg)).toContainEqual(
        `every role of this PostgreSQL cluster may connect to database ${database} (PUBLIC has CONNECT): any of them can listen to the replicas' notifications (connector ids, agent addresses) and send forged ones. Fix, as a superuser or the database's owner: REVOKE CONNECT ON DATABASE ${database} FROM PUBLIC; GRANT CONNECT ON DATABASE ${database} TO postgres;`,
      );

      const group = await a.admin.groups.create.mutate({ name: 'Targets' });
      const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
      const agent = (await enrollSim(a.url, key, 'target')).enrolled!;
      const session = connectSim(a.url, agent);
      await session.waitFor('ready');
      await eventually('B sees the session', async () =>
        (await b.admin.connectors.get.query({ connectorId: agent.connectorId })).connection === 'connected'
          ? true
          : null,
      );

      // The stranger can read nothing, but it can notify.
      await withClient(strangerUrl.toString(), async (c) => {
        await expect(c.query('SELECT * FROM agent_sessions')).rejects.toMatchObject({ code: '42501' });
        // Payloads that used to throw in a replica's event handler, ending the process.
        await c.query(`SELECT pg_notify('server_documents', 'signing-keys x')`);
        await c.query(`SELECT pg_notify('agent_sessions', E'd evil\\ncon_x notanumber -')`);
        // A claim of the agent's connector, larger than any real one, from a made-up replica, with
        // an address carrying terminal escapes: well-formed enough to ask for a look, or not at all.
        await c.query(`SELECT pg_notify('agent_sessions', $1)`, [
          `c evilreplica\n${agent.connectorId} 9000000000000 6.6.6.6`,
        ]);
        await c.query(`SELECT pg_notify('agent_sessions', $1)`, [
          `c evilreplica\n${agent.connectorId} 9000000000001 \x1b[31m6.6.6.6\x1b[0m`,
        ]);
        await c.query(`SELECT pg_notify('store_changes', 'anything at all')`);
      });

      // Both replicas still serve; the session was not replaced; the drop is said once.
      await eventually('A says it dropped notifications', async () =>
        logOfA.some((l) => l.msg.startsWith('dropped notifications no replica sent')) ? true : null,
      );
      for (const replica of [a, b]) expect((await fetch(`${replica.url}/healthz`)).status).toBe(200);
      // The forged claim was checked against the table (where A holds the claim) and forgotten.
      await eventually('the forged claim is forgotten', async () =>
        (await a.admin.connectors.get.query({ connectorId: agent.connectorId })).connection === 'connected'
          ? true
          : null,
      );
      expect(session.closes).toEqual([]);
      const connector = await a.admin.connectors.get.query({ connectorId: agent.connectorId });
      expect(JSON.stringify(connector)).not.toContain('6.6.6.6');

      // A real second session of the connector, on B, still replaces the one on A (the table agrees).
      const second = connectSim(b.url, agent);
      await second.waitFor('ready');
      expect((await session.waitForClose(10_000)).code).toBe(4009);
      await second.close();

      // With CONNECT taken from PUBLIC the stranger cannot connect, and a replica starting says nothing.
      await withClient(sharedClusterUrl(), async (c) => {
        await c.query(`REVOKE CONNECT ON DATABASE ${database} FROM PUBLIC`);
        await c.query(`GRANT CONNECT ON DATABASE ${database} TO postgres`);
      });
      await expect(withClient(strangerUrl.toString(), (c) => c.query('SELECT 1'))).rejects.toMatchObject({
        code: '42501',
      });
      const logOfC: Array<{ msg: string }> = [];
      const [c] = await startReplicas(db.url, 1, {
        loggerOf: () =>
          pino({ level: 'info' }, { write: (line: string) => void logOfC.push(JSON.parse(line)) }),
        joining: a,
      });
      servers.push(c!);
      expect(logOfC.some((l) => l.msg.startsWith('every role of this PostgreSQL cluster'))).toBe(false);
    } finally {
      await stopAll(servers);
      await withClient(sharedClusterUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${stranger}`));
    }
  });

  it('a forged deletion confirmation does not make a delete answer confirmed: the record decides', async () => {
    await using db = await freshDatabase();
    const stranger = `stranger_${randomBytes(4).toString('hex')}`;
    await withClient(sharedClusterUrl(), (c) => c.query(`CREATE ROLE ${stranger} LOGIN PASSWORD 'pw'`));
    const strangerUrl = new URL(db.url);
    strangerUrl.username = stranger;
    strangerUrl.password = 'pw';
    const servers = await startReplicas(db.url, 2);
    try {
      const [a, b] = servers as [TestServer, TestServer];
      const group = await a.admin.groups.create.mutate({ name: 'Targets' });
      const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
      // A session on B that hears its deletion but never acknowledges it.
      const agent = (await enrollSim(b.url, key, 'silent')).enrolled!;
      const session = connectSim(b.url, agent);
      await session.waitFor('ready');
      await eventually('A sees the session on B', async () =>
        (await a.admin.connectors.get.query({ connectorId: agent.connectorId })).connection === 'connected'
          ? true
          : null,
      );

      const bId = (await b.admin.replicas.list.query()).replicas.find((r) => r.self)?.id;
      expect(bId).toBeDefined();
      // While the delete through A waits for B's confirmation, the stranger announces one, as B
      // would (B's own replica id in the header), again and again until the delete answers.
      const deleting = a.admin.connectors.delete.mutate({ connectorId: agent.connectorId });
      let answered = false;
      void deleting.finally(() => {
        answered = true;
      });
      let forged = 0;
      await withClient(strangerUrl.toString(), async (c) => {
        for (let i = 0; i < 200 && !answered; i++) {
          await c.query(`SELECT pg_notify('agent_sessions', $1)`, [
            `d ${bId}\n${agent.connectorId} ${Date.now()} 6.6.6.6`,
          ]);
          forged++;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      });
      expect(forged).toBeGreaterThan(1);
      expect((await deleting).termination).toEqual({
        state: 'pending',
        confirmedAt: null,
        confirmedFrom: null,
      });
      await session.waitFor('deleted', 5000);
      await session.close();
    } finally {
      await stopAll(servers);
      await withClient(sharedClusterUrl(), (c) => c.query(`DROP ROLE IF EXISTS ${stranger}`));
    }
  });
});
