import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseServeConfig } from '../server/config.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { serverCli } from './helpers/cli.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { startRelay } from './helpers/relay.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import { type TestServer, tempDir } from './helpers/server.js';

/**
 * Seconds, not the 5 s and 15 s of a deployment: the replica cut off ends its sessions 3.2 s after
 * its last heartbeat went through (the dead bound less a fifth), the others count it dead at 4 s.
 */
const TIMING = { replicaHeartbeatMs: 500, replicaDeadAfterMs: 4000 };

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function ready(server: TestServer): Promise<boolean> {
  return (await fetch(`${server.url}/healthz`)).status === 200;
}

/** Replica B on the database; replica A on it through a relay the test can partition. */
async function partitionablePair(options: { whenCutOff?: 'keep-sessions' } = {}) {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  const direct = new URL(db.url);
  const relay = await startRelay(`http://${direct.hostname}:${direct.port}`);
  cleanups.push(() => relay.close());
  const throughRelay = new URL(db.url);
  throughRelay.hostname = '127.0.0.1';
  throughRelay.port = String(relay.port);
  const logOfA: Array<{ level: number; msg: string; sessions?: number }> = [];
  const [b] = (await startReplicas(db.url, 1, { config: TIMING })) as [TestServer];
  cleanups.push(() => stopAll([b]));
  const [a] = (await startReplicas(throughRelay.toString(), 1, {
    config: { ...TIMING, ...options },
    joining: b,
    loggerOf: () => pino({ level: 'warn' }, { write: (line: string) => void logOfA.push(JSON.parse(line)) }),
  })) as [TestServer];
  // Healed before A stops: its last statements (releasing its sessions) need the database.
  cleanups.push(async () => {
    relay.heal();
    await stopAll([a]);
  });
  const group = await b.admin.groups.create.mutate({ name: 'Cut off' });
  const key = (await b.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
  const enroll = async (name: string) => (await enrollSim(b.url, key, name)).enrolled!;
  return { db, relay, a, b, logOfA, enroll };
}

describe('a replica cut off from PostgreSQL while the others reach it', () => {
  it('ends its sessions before the others count it dead, so a revoke through another replica reaches its agents; back, it takes sessions again', async () => {
    const { db, relay, a, b, logOfA, enroll } = await partitionablePair();
    const [kept, revoked] = [await enroll('kept'), await enroll('revoked')];
    const onA = [connectSim(a.url, kept), connectSim(a.url, revoked)];
    await Promise.all(onA.map((s) => s.waitFor('ready')));
    await eventually('B sees both sessions on A', async () =>
      (await b.admin.connectors.list.query({})).items.every((c) => c.connection === 'connected'),
    );

    relay.partition();
    // Through B, which reaches the database: saved; A holds the session and cannot confirm it.
    const answer = await b.admin.connectors.revoke.mutate({ connectorId: revoked.connectorId });
    expect(answer.termination?.state).toBe('pending');
    // A hears nothing of it, but no longer keeps sessions it cannot vouch for: both end, not finally.
    for (const session of onA)
      expect(await session.waitForClose(30_000)).toEqual({
        code: 1012,
        reason: 'session lost by this replica, reconnect',
      });
    expect(onA.every((s) => s.events.every((e) => e.type !== 'revoked'))).toBe(true);
    expect(await ready(a)).toBe(false);
    expect(logOfA.find((l) => l.msg.startsWith('this replica has not reached the database'))).toMatchObject({
      level: 40,
      sessions: 2,
      msg: expect.stringMatching(
        /^this replica has not reached the database for \d+ s: it ended its 2 agent sessions \(1012, not final\) because it can no longer hear a revoke made through another replica; its agents reconnect to a replica that can, or wait \(--when-cut-off keep-sessions keeps them instead\)$/,
      ),
    });
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_replica_cut_offs_total 1$/m);
    expect(metrics).toMatch(/^connector_replica_cut_off_sessions_total 2$/m);
    // Reconnecting through B, the revoked agent is refused for good, the other is back.
    const refused = connectSim(b.url, revoked);
    expect(await refused.waitForClose(10_000)).toEqual({ code: 4001, reason: 'CONNECTOR_REVOKED' });
    const moved = connectSim(b.url, kept);
    await moved.waitFor('ready', 10_000);
    expect(await ready(a)).toBe(false);

    relay.heal();
    await eventually('A ready again', () => ready(a), 30_000);
    // Nothing of A's old sessions is left in the table: the kept connector's row is B's.
    const sessions = await withClient(db.url, async (client) => {
      const { rows } = await client.query<{ connector_id: string; replica_id: string }>(
        'SELECT connector_id, replica_id FROM agent_sessions',
      );
      return rows;
    });
    const replicas = await b.admin.replicas.list.query({});
    const idOfB = replicas.replicas.find((r) => r.self)?.id;
    expect(sessions).toEqual([{ connector_id: kept.connectorId, replica_id: idOfB }]);
    // And A takes sessions again (the agent's next reconnect may land there).
    await moved.close();
    const back = connectSim(a.url, kept);
    await back.waitFor('ready', 10_000);
    await back.close();
  });

  it('with --when-cut-off keep-sessions, it keeps them past the point the others count it dead, and ends them once back', async () => {
    const { relay, a, b, logOfA, enroll } = await partitionablePair({ whenCutOff: 'keep-sessions' });
    const session = connectSim(a.url, await enroll('kept'));
    await session.waitFor('ready');
    await eventually('B sees the session on A', async () =>
      (await b.admin.connectors.list.query({})).items.every((c) => c.connection === 'connected'),
    );
    const idOfA = (await a.admin.replicas.list.query({})).replicas.find((r) => r.self)?.id;
    relay.partition();
    // Dead, then reaped (gone from the list) at B's next heartbeat.
    expect(idOfA).toBeTruthy();
    await eventually(
      'B reaps A',
      async () => !(await b.admin.replicas.list.query({})).replicas.some((r) => r.id === idOfA),
      30_000,
    );
    expect(session.closes).toEqual([]);
    // Kept, and said once at the point the default would have ended them: the operator knows this
    // replica no longer hears a revoke made elsewhere.
    const kept = logOfA.filter((l) =>
      / it keeps its agent sessions \(--when-cut-off keep-sessions\)/.test(l.msg),
    );
    expect(kept).toHaveLength(1);
    expect(kept[0]).toMatchObject({ level: 40 });
    relay.heal();
    // Its row was reaped meanwhile: back, it ends its sessions, whose agents may be elsewhere by now.
    expect(await session.waitForClose(30_000)).toEqual({
      code: 1012,
      reason: 'session lost by this replica, reconnect',
    });
    await eventually('A ready again', () => ready(a), 30_000);
  });

  it('--when-cut-off: end-sessions by default, keep-sessions on demand, anything else refused in one line; only with --database-url', async () => {
    const url = 'postgres://connector@127.0.0.1:5432/connector';
    expect(parseServeConfig({ databaseUrl: url }, {}).whenCutOff).toBe('end-sessions');
    expect(
      parseServeConfig({ databaseUrl: url }, { CONNECTOR_WHEN_CUT_OFF: 'keep-sessions' }).whenCutOff,
    ).toBe('keep-sessions');
    expect(() => parseServeConfig({ whenCutOff: 'keep-sessions' }, {})).toThrow(
      '--when-cut-off goes with --database-url (a server without a database is never cut off from its store)',
    );
    const bad = await serverCli(
      ['serve', '--port', '0', '--data-dir', await tempDir(), '--when-cut-off', 'keep'],
      {
        CONNECTOR_DATABASE_URL: url,
      },
    );
    expect([bad.code, bad.stdout]).toEqual([2, '']);
    expect(bad.stderr).toMatch(/^error: --when-cut-off: .*"end-sessions".*"keep-sessions".*\n$/);
  });
});
