import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import {
  type AddressInfo,
  createServer as createNetServer,
  connect as netConnect,
  type Socket,
} from 'node:net';
import pg from 'pg';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { composeServer } from '../server/app.js';
import { ManualClock } from '../server/clock.js';
import { ISSUER } from '../server/server-config.js';
import { MemoryAuditLog } from '../server/services/audit.js';
import { IdentityAuthority } from '../server/services/identity.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { SecretBox } from '../server/services/secrets.js';
import type { DeletionConfirmation, LostSession } from '../server/sessions/cluster-sessions.js';
import { DatabaseClock } from '../server/sessions/database-clock.js';
import {
  PostgresClusterSessions,
  type PostgresClusterSessionsOptions,
} from '../server/sessions/postgres-cluster-sessions.js';
import { CONFIRMATION_RETENTION_MS } from '../server/sessions/postgres-cluster-sql.js';
import { MemoryStore } from '../server/store/memory-store.js';
import { MIGRATIONS_DIR, migrateToLatest } from '../server/store/postgres/migrate.js';
import { DAY_MS } from '../shared/durations.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { freshDatabase, migrateFirst, startPostgres, testPool, withClient } from './helpers/postgres.js';
import { startRelay } from './helpers/relay.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function database(): Promise<string> {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  await withClient(db.url, migrateToLatest);
  return db.url;
}

/**
 * One replica's cluster sessions on the database; timers far apart and the silence it measures
 * frozen (a test moves it through `monotonic`), so the test drives the rounds.
 */
/** A ManualClock that follows real time until the test steps it. */
function realTime(): ManualClock {
  const clock = new ManualClock();
  let offset = 0;
  clock.now = () => Date.now() + offset;
  clock.advance = (ms: number) => {
    offset += ms;
  };
  return clock;
}

async function clusterOn(
  url: string,
  clock: ManualClock,
  options: Partial<PostgresClusterSessionsOptions> = {},
): Promise<PostgresClusterSessions> {
  const pool = testPool(url, 4);
  pool.on('error', () => {});
  const cluster = await PostgresClusterSessions.start({
    pool,
    connectionString: url,
    clock,
    heartbeatMs: 3_600_000,
    resyncMs: 3_600_000,
    monotonic: () => 0,
    ...options,
  });
  cleanups.push(async () => {
    await cluster.stop();
    await pool.end();
  });
  return cluster;
}

/**
 * A replica's session side: the real registry and hub (composeServer) over its cluster sessions,
 * behind a websocket server on loopback that admits each socket as the session of the connector its
 * path names, from the address its query gives.
 */
async function replicaOn(url: string, clock: ManualClock) {
  const cluster = await clusterOn(url, clock);
  const audit = new MemoryAuditLog(clock);
  const { hub } = composeServer(
    {
      store: new MemoryStore(),
      audit,
      clock,
      identity: await IdentityAuthority.inMemory({ issuer: ISSUER, clock }),
      secretBox: new SecretBox(randomBytes(32)),
      logger: pino({ level: 'silent' }),
      cluster,
    },
    {
      keyTtlMs: 14 * DAY_MS,
      identityTtlMs: 365 * DAY_MS,
      pendingTtlMs: 7 * DAY_MS,
      rateLimits: DEFAULT_RATE_LIMITS,
    },
  );
  const http = createServer();
  const wss = new WebSocketServer({ server: http });
  wss.on('connection', (ws, req) => {
    const { pathname, searchParams } = new URL(req.url ?? '/', 'http://x');
    const connectorId = pathname.slice(1);
    const claims = {
      connectorId,
      groupId: 'grp_1',
      provisioningKeyId: 'key_1',
      jkt: 'jkt',
      issuedAt: clock.now(),
      expiresAt: clock.now() + DAY_MS,
      keyId: 'k',
    };
    hub.admit(claims, ws, null, searchParams.get('from') ?? '192.0.2.1');
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const port = (http.address() as AddressInfo).port;
  cleanups.push(async () => {
    hub.closeAll();
    for (const client of wss.clients) client.terminate();
    await new Promise((resolve) => http.close(resolve));
  });
  /** Opens a session of `connectorId` from `from`; resolves once the replica holds it. */
  const connect = async (connectorId: string, from: string) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/${connectorId}?from=${from}`);
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    await until(() => hub.liveSession(connectorId)?.remoteAddress === from);
    return { ws, closed };
  };
  return { cluster, hub, audit, connect };
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A relay to the database's server, and the database's URL through it (see Relay.partition). */
async function relayTo(url: string) {
  const direct = new URL(url);
  const relay = await startRelay(`http://${direct.hostname}:${direct.port}`);
  const through = new URL(url);
  through.hostname = '127.0.0.1';
  through.port = String(relay.port);
  return {
    databaseUrl: through.toString(),
    partition: () => relay.partition(),
    heal: () => relay.heal(),
    [Symbol.asyncDispose]: () => relay.close(),
  };
}

/**
 * A relay to the database whose client-to-server bytes can be held back and delivered later, as TCP
 * does for a network that comes back before it gives up: a statement sent meanwhile runs late.
 */
async function holdingRelayTo(url: string) {
  const direct = new URL(url);
  const links: Array<{ inbound: Socket; outbound: Socket }> = [];
  let holding = false;
  const server = createNetServer((inbound) => {
    const outbound = netConnect({ port: Number(direct.port), host: direct.hostname });
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
    outbound.pipe(inbound);
    if (!holding) inbound.pipe(outbound);
    links.push({ inbound, outbound });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const through = new URL(url);
  through.hostname = '127.0.0.1';
  through.port = String((server.address() as AddressInfo).port);
  return {
    databaseUrl: through.toString(),
    hold: () => {
      holding = true;
      for (const { inbound, outbound } of links) inbound.unpipe(outbound);
    },
    deliver: () => {
      holding = false;
      for (const { inbound, outbound } of links) inbound.pipe(outbound);
    },
    /**
     * Delivers what was held, then cuts each link at the next statement sent on it (the network
     * fails again); connections opened after go through.
     */
    deliverThenCut: () => {
      holding = false;
      for (const { inbound, outbound } of links) {
        for (let chunk = inbound.read(); chunk !== null; chunk = inbound.read()) outbound.write(chunk);
        inbound.on('data', () => {
          inbound.destroy();
          outbound.destroy();
        });
        inbound.resume();
      }
    },
    [Symbol.asyncDispose]: async () => {
      for (const { inbound, outbound } of links) {
        inbound.destroy();
        outbound.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function rows(url: string): Promise<Array<{ connector_id: string; replica_id: string }>> {
  return withClient(url, async (client) => {
    const result = await client.query(
      'SELECT connector_id, replica_id FROM agent_sessions ORDER BY connector_id',
    );
    return result.rows;
  });
}

describe('one session per connector across replicas (PostgreSQL)', () => {
  it('a session on B replaces the one on A: A closes it with 4009 naming B’s address; both see it connected', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await replicaOn(url, clock);
    const b = await replicaOn(url, clock);
    const first = await a.connect('con_1', '192.0.2.1');
    await a.cluster.flush();
    await until(() => b.cluster.isConnectedElsewhere('con_1'));

    const second = await b.connect('con_1', '192.0.2.2');
    expect(await first.closed).toEqual({
      code: CLOSE_CODES.REPLACED,
      reason: 'SESSION_REPLACED by=192.0.2.2',
    });
    await b.cluster.flush();
    await until(() => a.hub.liveSession('con_1') === undefined && a.cluster.isConnectedElsewhere('con_1'));
    expect(b.hub.liveSession('con_1')?.remoteAddress).toBe('192.0.2.2');
    // Audited where the replaced session was, as a replacement within one server is.
    const replaced = a.audit.events.filter((e) => e.type === 'session.replaced');
    expect(replaced).toMatchObject([
      {
        connectorId: 'con_1',
        security: true,
        details: { previousRemoteAddress: '192.0.2.1', newRemoteAddress: '192.0.2.2' },
      },
    ]);
    expect(second.ws.readyState).toBe(WebSocket.OPEN);
    // A's close released nothing of B's: the row is B's.
    await a.cluster.flush();
    expect(await rows(url)).toEqual([{ connector_id: 'con_1', replica_id: b.cluster.replicaId }]);

    second.ws.close();
    await second.closed;
    await until(() => b.hub.liveSession('con_1') === undefined);
    await b.cluster.flush();
    await until(() => !a.cluster.isConnectedElsewhere('con_1'));
    expect(await rows(url)).toEqual([]);
  });

  it('a replica taken for dead closes its sockets with 1012 (not final) once it sees it; presence then says gone', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await replicaOn(url, clock);
    const b = await clusterOn(url, clock);
    const session = await a.connect('con_1', '192.0.2.1');
    await a.cluster.flush();
    await until(() => b.isConnectedElsewhere('con_1'));
    clock.advance(15_001);
    expect(b.isConnectedElsewhere('con_1')).toBe(false);
    await b.heartbeat();
    await a.cluster.heartbeat();
    expect(await session.closed).toEqual({ code: 1012, reason: 'session lost by this replica, reconnect' });
    expect(await rows(url)).toEqual([]);
  });

  it('claims of one connector on two replicas at once: exactly one session lives, and the table names it', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    const ended: Record<string, LostSession[]> = { a: [], b: [] };
    a.onLost((lost) => ended.a!.push(lost));
    b.onLost((lost) => ended.b!.push(lost));
    const ids = Array.from({ length: 50 }, (_, i) => `con_${i}`);
    for (const connectorId of ids) {
      a.claim({ connectorId, sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
      b.claim({ connectorId, sessionId: 1, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    }
    await Promise.all([a.flush(), b.flush()]);
    await until(() => ended.a!.length + ended.b!.length === ids.length);
    const table = new Map((await rows(url)).map((row) => [row.connector_id, row.replica_id]));
    for (const connectorId of ids) {
      const loser = ended.a!.some((l) => l.connectorId === connectorId) ? 'a' : 'b';
      const winner = loser === 'a' ? b : a;
      expect(ended[loser === 'a' ? 'b' : 'a']!.some((l) => l.connectorId === connectorId)).toBe(false);
      expect(table.get(connectorId)).toBe(winner.replicaId);
      expect((loser === 'a' ? a : b).isConnectedElsewhere(connectorId)).toBe(true);
    }
  });

  it('a claim whose number was taken before another’s but committed after loses, in the table and on both replicas', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    const lostOnB: LostSession[] = [];
    b.onLost((lost) => lostOnB.push(lost));
    await withClient(url, (client) => client.query(`SELECT setval('agent_session_claims', 1000)`));
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    await until(() => b.isConnectedElsewhere('con_1'));
    // B's claim now gets a smaller number than A's, as one that took its number first and committed last.
    await withClient(url, (client) => client.query(`SELECT setval('agent_session_claims', 1, false)`));
    b.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    await b.flush();
    // A's claim was heard, and is checked in the table before it ends B's session (a round trip).
    await until(() => lostOnB.length > 0);
    expect(lostOnB).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: '192.0.2.1' }]);
    expect(await rows(url)).toEqual([{ connector_id: 'con_1', replica_id: a.replicaId }]);
    await new Promise((resolve) => setTimeout(resolve, 100)); // B's notification reaches A, which keeps its session
    expect(a.isConnectedElsewhere('con_1')).toBe(false);
  });

  it('a replica that stops heartbeating: its sessions count as gone after the bound, and one replica reaps them', async () => {
    const url = await database();
    const clock = new ManualClock();
    const reaped: Array<{ connectorId: string; lastSeenAt: number }> = [];
    const a = await clusterOn(url, clock, { deadAfterMs: 15_000 });
    const b = await clusterOn(url, clock, { deadAfterMs: 15_000, onReaped: (s) => reaped.push(...s) });
    const c = await clusterOn(url, clock, { deadAfterMs: 15_000, onReaped: (s) => reaped.push(...s) });
    for (let i = 0; i < 10; i++)
      a.claim({
        connectorId: `con_${i}`,
        sessionId: i + 1,
        remoteAddress: '192.0.2.1',
        connectedAt: clock.now(),
      });
    await a.flush();
    await until(() => b.connectedElsewhere() === 10 && c.connectedElsewhere() === 10);
    const lastBeat = clock.now();
    await a.abandon(); // as if killed: no release, no more heartbeats

    clock.advance(15_000);
    expect(b.isConnectedElsewhere('con_0')).toBe(true); // within the bound
    clock.advance(1);
    expect(b.isConnectedElsewhere('con_0')).toBe(false); // past it, before anyone reaped
    expect(c.connectedElsewhere()).toBe(0);

    await Promise.all([b.heartbeat(), c.heartbeat()]);
    expect(reaped.map((s) => s.connectorId).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `con_${i}`).sort(),
    );
    expect(new Set(reaped.map((s) => s.lastSeenAt))).toEqual(new Set([lastBeat]));
    expect(await rows(url)).toEqual([]);
  });

  it('each heartbeat counts the live replicas, itself included; one past the bound no longer counts, and the list shows it dead until reaped', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock, { deadAfterMs: 15_000 });
    const b = await clusterOn(url, clock, { deadAfterMs: 15_000 });
    const c = await clusterOn(url, clock, { deadAfterMs: 15_000 });
    expect(a.liveCount()).toBe(1); // its start-up heartbeat, alone then
    await b.heartbeat();
    expect(b.liveCount()).toBe(3);
    await a.abandon(); // as if killed
    clock.advance(10_000);
    await c.heartbeat();
    await b.heartbeat();
    expect(b.liveCount()).toBe(3); // A within the bound
    clock.advance(5_001);
    // A's heartbeat is 15,001 ms old: listed, and dead, until a live replica's heartbeat reaps it.
    const listed = await b.list();
    // (All three started at the same instant of the test's clock: in id order.)
    expect(listed.map((r) => r.id)).toEqual([a.replicaId, b.replicaId, c.replicaId].sort());
    expect(clock.now() - listed.find((r) => r.id === a.replicaId)!.heartbeatAt!).toBe(15_001);
    await b.heartbeat();
    expect(b.liveCount()).toBe(2);
    await c.heartbeat();
    expect(c.liveCount()).toBe(2);
    expect((await c.list()).map((r) => r.id)).toEqual([b.replicaId, c.replicaId].sort());
  });

  it('each heartbeat writes why the replica is not ready; every replica lists it, and clears it once ready', async () => {
    const url = await database();
    const clock = new ManualClock();
    let problems = ['the change feed last read the database 4 s ago'];
    const a = await clusterOn(url, clock, { problems: () => problems });
    const b = await clusterOn(url, clock);
    const problemsOf = async (id: string) => (await b.list()).find((r) => r.id === id)?.problems;
    expect(await problemsOf(a.replicaId)).toEqual(problems);
    expect(await problemsOf(b.replicaId)).toEqual([]);
    problems = [];
    await a.heartbeat();
    expect(await problemsOf(a.replicaId)).toEqual([]);
  });

  it('a replica taken for dead (heartbeat lapsed) ends its sessions without a final code when it is back', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    const lost: LostSession[] = [];
    a.onLost((l) => lost.push(l));
    a.claim({ connectorId: 'con_1', sessionId: 7, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    clock.advance(15_001);
    await b.heartbeat(); // B beats and reaps A
    expect(lost).toEqual([]);
    await a.heartbeat(); // A finds its row gone
    expect(lost).toEqual([{ connectorId: 'con_1', sessionId: 7, replacedBy: null }]);
    clock.advance(1000);
    await b.heartbeat();
    expect(
      await withClient(url, async (client) => (await client.query('SELECT id FROM replicas')).rowCount),
    ).toBe(2);
  });

  it('cut off (heartbeats not going through) for 12 s of its own monotonic time, a replica ends its sessions (1012) before the others count it dead; back, it releases its rows before it beats', async () => {
    const db = await database();
    await using relay = await relayTo(db);
    const clock = new ManualClock();
    let silence = 0;
    const ended: Array<[number, number]> = [];
    const a = await clusterOn(relay.databaseUrl, clock, {
      monotonic: () => silence,
      onCutOff: (sessions, silentMs) => ended.push([sessions, silentMs]),
    });
    const b = await clusterOn(db, clock);
    const lost: LostSession[] = [];
    a.onLost((l) => lost.push(l));
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    await until(() => b.isConnectedElsewhere('con_1'));

    relay.partition();
    // A claim on its way when the network went: it hangs, neither through nor failed.
    a.claim({ connectorId: 'con_2', sessionId: 2, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    const claimsBefore = a.statements.claim;
    await until(() => a.statements.claim === claimsBefore + 1);
    const hungBeat = a.heartbeat();
    silence = 12_000; // the bound itself: not past it
    a.cutOff.check();
    expect([lost, ended]).toEqual([[], []]);
    silence = 12_001; // wall clock not moved: B still counts A alive, as it would for 3 s more
    a.cutOff.check();
    a.cutOff.check(); // once
    expect(lost).toEqual([
      { connectorId: 'con_1', sessionId: 1, replacedBy: null },
      { connectorId: 'con_2', sessionId: 2, replacedBy: null },
    ]);
    expect(ended).toEqual([[2, 12_001]]);
    expect(a.cutOff.endedSessions).toBe(true);
    // A session whose handshake was under way is claimed meanwhile: it ends too, and is never written.
    a.claim({ connectorId: 'con_4', sessionId: 4, remoteAddress: '192.0.2.4', connectedAt: clock.now() });
    await until(() => lost.length === 3);
    expect(lost[2]).toEqual({ connectorId: 'con_4', sessionId: 4, replacedBy: null });

    relay.heal(); // the hung claim fails now and is not sent again
    // The heartbeat made before the silence carried the time it was made: going through late, it
    // does not count as a new one.
    await hungBeat;
    clock.advance(1);
    for (let i = 0; i < 100 && a.lastHeartbeatAt !== clock.now(); i++) {
      await a.heartbeat();
      if (a.lastHeartbeatAt !== clock.now()) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(a.cutOff.endedSessions).toBe(false);
    expect(a.lastHeartbeatAt).toBe(clock.now());
    // Its row was still there (nobody reaped it): what it had claimed is released all the same.
    expect(await rows(db)).toEqual([]);
    await a.flush();
    await new Promise((resolve) => setTimeout(resolve, 1200)); // past the outbox's retry
    await a.flush();
    expect(await rows(db)).toEqual([]);
    await until(() => !b.isConnectedElsewhere('con_1'));
    // Beating again, it is watched again: the next silence ends its new sessions too.
    a.claim({ connectorId: 'con_3', sessionId: 3, remoteAddress: '192.0.2.3', connectedAt: clock.now() });
    await a.flush();
    silence = 24_002;
    a.cutOff.check();
    expect(lost.at(-1)).toEqual({ connectorId: 'con_3', sessionId: 3, replacedBy: null });
  });

  it('a session that ended on A before its claim went out (the database away) claims nothing: B’s newer session of the connector is left alone', async () => {
    const db = await database();
    await using relay = await relayTo(db);
    const clock = new ManualClock();
    const a = await clusterOn(relay.databaseUrl, clock);
    const b = await clusterOn(db, clock);
    const lostOnB: LostSession[] = [];
    b.onLost((l) => lostOnB.push(l));

    relay.partition();
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    const claimsBefore = a.statements.claim;
    await until(() => a.statements.claim === claimsBefore + 1); // hung on the partition
    // The agent's socket to A ends, and it reconnects to B, which claims it while A's claim waits.
    a.release('con_1', 1);
    b.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    await b.flush();
    expect(await rows(db)).toEqual([{ connector_id: 'con_1', replica_id: b.replicaId }]);

    relay.heal(); // A's claim fails, and its outbox tries again after its retry pause
    await until(() => a.statements.claim > claimsBefore + 1 || a.statements.release > 0, 5000);
    await a.flush();
    await new Promise((resolve) => setTimeout(resolve, 300)); // B hears of whatever A sent, and checks it
    expect(lostOnB).toEqual([]);
    expect(await rows(db)).toEqual([{ connector_id: 'con_1', replica_id: b.replicaId }]);
  });

  it('a claim that reaches the database late (held on the network) does not end the agent’s newer session on another replica for good', async () => {
    const db = await database();
    await using relay = await holdingRelayTo(db);
    const clock = new ManualClock();
    const a = await clusterOn(relay.databaseUrl, clock);
    const b = await clusterOn(db, clock);
    const lostOnA: LostSession[] = [];
    const lostOnB: LostSession[] = [];
    a.onLost((l) => lostOnA.push(l));
    b.onLost((l) => lostOnB.push(l));

    relay.hold(); // A's host loses the network: what it sends waits in TCP's buffers
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    const claimsBefore = a.statements.claim;
    await until(() => a.statements.claim === claimsBefore + 1);
    // The agent, cut off from A too, reconnects to B 5 s later; A has not noticed its socket died.
    clock.advance(5000);
    b.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    await b.flush();
    relay.deliver(); // the network is back: A's claim runs now, with a larger number than B's
    await a.flush();
    await until(() => lostOnB.length > 0);
    // Not replaced for good (4009 stops the agent): told to reconnect (1012).
    expect(lostOnB).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: null }]);
    // It does, to B: its new claim outnumbers A's late one, and A's stale session is the one replaced.
    b.claim({ connectorId: 'con_1', sessionId: 2, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    await b.flush();
    await until(() => lostOnA.length > 0);
    expect(lostOnA).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: '192.0.2.2' }]);
    expect(await rows(db)).toEqual([{ connector_id: 'con_1', replica_id: b.replicaId }]);
  });

  it('a replica taken for dead while a claim of its was on the wire: the claim landing late leaves no row behind', async () => {
    const db = await database();
    await using relay = await holdingRelayTo(db);
    const clock = new ManualClock();
    // Its statements go through the relay, its heartbeat straight to the database.
    const pool = testPool(relay.databaseUrl, 4);
    const heartbeatPool = testPool(db, 1);
    cleanups.push(async () => {
      await pool.end();
      await heartbeatPool.end();
    });
    const a = await clusterOn(db, clock, { pool, heartbeatPool });
    const lost: LostSession[] = [];
    a.onLost((l) => lost.push(l));

    relay.hold(); // the claim leaves A and waits on the network
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    const claimsBefore = a.statements.claim;
    await until(() => a.statements.claim === claimsBefore + 1);
    // Meanwhile the others took A for dead and reaped it: its row is gone.
    await withClient(db, (client) => client.query('DELETE FROM replicas WHERE id = $1', [a.replicaId]));
    const beat = a.heartbeat(); // finds its row gone: registers again, releases, ends its sessions
    await until(() => lost.length > 0);
    relay.deliver(); // the claim runs now, after what A released
    await beat;
    await a.flush();
    expect(lost).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: null }]);
    expect(await rows(db)).toEqual([]);
  });

  it('a replica taken for dead whose release then fails releases its rows once the database answers again: no row is left for a session no one holds', async () => {
    const db = await database();
    await using relay = await holdingRelayTo(db);
    const clock = new ManualClock();
    const pool = testPool(relay.databaseUrl, 4);
    const heartbeatPool = testPool(db, 1);
    cleanups.push(async () => {
      await pool.end();
      await heartbeatPool.end();
    });
    const a = await clusterOn(db, clock, { pool, heartbeatPool });
    const lost: LostSession[] = [];
    a.onLost((l) => lost.push(l));

    relay.hold();
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    const claimsBefore = a.statements.claim;
    await until(() => a.statements.claim === claimsBefore + 1);
    await withClient(db, (client) => client.query('DELETE FROM replicas WHERE id = $1', [a.replicaId]));
    const beat = a.heartbeat(); // registers again, ends its sessions, and releases after the claim
    await until(() => lost.length > 0);
    relay.deliverThenCut(); // the claim lands; the release sent after it is cut off
    await beat;
    await a.heartbeat(); // its row is back: nothing tells this heartbeat to release
    const deadline = Date.now() + 5000;
    while ((await rows(db)).length > 0 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await rows(db)).toEqual([]);
  });

  it('a full read during which the database clock steps back a few ms (a heartbeat reading lands) keeps every session it read', async () => {
    const db = await database();
    const clock = new ManualClock();
    const b = await clusterOn(db, clock);
    b.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    await b.flush();
    // A's clock follows the database's: a reading taken while a page is on its way (a heartbeat
    // beside the read) moves it back by the error of the one before, up to half a round trip.
    const pool = testPool(db, 4);
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
    pool.query = (async (...args: unknown[]) => {
      const result = await query(...args);
      if (String(args[0]).includes('FROM agent_sessions WHERE replica_id <> $1 AND connector_id > $2'))
        clock.advance(-5);
      return result;
    }) as typeof pool.query;
    cleanups.push(() => pool.end());
    const a = await clusterOn(db, clock, { pool }); // its start reads every other replica's session
    expect(a.isConnectedElsewhere('con_1')).toBe(true);
    await a.resync();
    expect(a.isConnectedElsewhere('con_1')).toBe(true);
  });

  it('a session that ended before its claim came back clears a claim of it written with its answer lost', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    // An earlier try of A's claim that reached the table, its answer lost on the way back.
    await withClient(url, (client) =>
      client.query(
        `INSERT INTO agent_sessions (connector_id, replica_id, session_id, remote_address, connected_at)
         VALUES ('con_1', $1, nextval('agent_session_claims'), '192.0.2.1', 0)`,
        [a.replicaId],
      ),
    );
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    a.release('con_1', 1);
    await a.flush();
    expect([await rows(url), a.statements.claim]).toEqual([[], 0]);
  });

  it('the heartbeat has a connection of its own: a pool busy with other statements does not hold it back', async () => {
    const url = await database();
    const clock = new ManualClock();
    const [pool, heartbeatPool] = [testPool(url, 4), testPool(url, 1)];
    cleanups.push(async () => {
      await heartbeatPool.end();
      await pool.end();
    });
    const cluster = await clusterOn(url, clock, { pool, heartbeatPool });
    // A lock the test holds, and every connection of the main pool waiting for it.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock(42)');
    let waited = false;
    const busy = Promise.all(
      Array.from({ length: 4 }, () => pool.query('SELECT pg_advisory_xact_lock(42)')),
    ).then(() => {
      waited = true;
    });
    await until(() => pool.waitingCount === 0 && pool.idleCount === 0 && pool.totalCount === 4);
    clock.advance(5000);
    await cluster.heartbeat();
    expect([cluster.lastHeartbeatAt, waited]).toEqual([clock.now(), false]);
    await holder.query('COMMIT');
    await holder.end();
    await busy;
  });

  it('with keep-sessions, a replica cut off keeps its sessions however long the silence', async () => {
    const db = await database();
    const clock = new ManualClock();
    let silence = 0;
    const a = await clusterOn(db, clock, { monotonic: () => silence, whenCutOff: 'keep-sessions' });
    const lost: LostSession[] = [];
    a.onLost((l) => lost.push(l));
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    silence = 3_600_000;
    a.cutOff.check();
    expect([lost, a.cutOff.endedSessions]).toEqual([[], false]);
    expect((await rows(db)).map((r) => r.connector_id)).toEqual(['con_1']);
  });

  it('after a database outage longer than the bound, the replica back first does not reap the others: nobody loses a session', async () => {
    await using postgres = await startPostgres();
    const db = await freshDatabase(postgres.url);
    await withClient(db.url, migrateToLatest);
    const clock = new ManualClock();
    const [a, b] = [await clusterOn(db.url, clock), await clusterOn(db.url, clock)];
    const lost: LostSession[] = [];
    for (const cluster of [a, b]) cluster.onLost((l) => lost.push(l));
    a.claim({ connectorId: 'con_a', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    b.claim({ connectorId: 'con_b', sessionId: 2, remoteAddress: '192.0.2.2', connectedAt: clock.now() });
    await Promise.all([a.flush(), b.flush()]);
    clock.advance(20_000); // beating all along, as replicas do

    await postgres.stop();
    clock.advance(20_000); // the outage: every heartbeat fails
    await Promise.all([a.heartbeat(), b.heartbeat()]);
    expect(a.lastHeartbeatAt).toBeLessThan(clock.now());
    await postgres.start();
    // A is back first: B's last heartbeat is 20 s old, but so was A's a moment ago.
    for (let i = 0; i < 200 && a.lastHeartbeatAt !== clock.now(); i++) {
      await a.heartbeat();
      if (a.lastHeartbeatAt !== clock.now()) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(a.lastHeartbeatAt).toBe(clock.now());
    await b.heartbeat();
    expect(b.lastHeartbeatAt).toBe(clock.now());
    expect(lost).toEqual([]);
    expect((await rows(db.url)).map((r) => r.connector_id).sort()).toEqual(['con_a', 'con_b']);
    // Beating again, each would still reap a replica that stays silent past the bound.
    await b.abandon();
    clock.advance(15_001);
    await a.heartbeat();
    expect((await rows(db.url)).map((r) => r.connector_id)).toEqual(['con_a']);
  });

  it('back from an outage, a replica whose wall clock then steps forward an hour still waits the bound before it reaps', async () => {
    await using postgres = await startPostgres();
    const db = await freshDatabase(postgres.url);
    await withClient(db.url, migrateToLatest);
    const deadAfterMs = 1000;
    // Real time for the database's clock as each follows it; A's wall clock is one the test steps.
    const wall = realTime();
    const cluster = (clock: ManualClock) =>
      clusterOn(db.url, clock, { deadAfterMs, databaseClock: new DatabaseClock(clock) });
    const [a, b] = [await cluster(wall), await cluster(realTime())];
    const lost: LostSession[] = [];
    for (const c of [a, b]) c.onLost((l) => lost.push(l));
    b.claim({ connectorId: 'con_b', sessionId: 1, remoteAddress: '192.0.2.2', connectedAt: Date.now() });
    await b.flush();

    await postgres.stop();
    await new Promise((resolve) => setTimeout(resolve, deadAfterMs + 500)); // longer than the bound
    await Promise.all([a.heartbeat(), b.heartbeat()]);
    const failedAt = wall.now();
    await postgres.start();
    for (let i = 0; i < 200 && a.lastHeartbeatAt < failedAt; i++) {
      await a.heartbeat();
      if (a.lastHeartbeatAt < failedAt) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(a.lastHeartbeatAt).toBeGreaterThanOrEqual(failedAt); // A is back first; B has not beaten since
    wall.advance(3_600_000); // NTP steps A's clock forward
    await a.heartbeat();
    expect(lost).toEqual([]);
    expect((await rows(db.url)).map((r) => r.connector_id)).toEqual(['con_b']);
  });

  it('2,000 claims at once go out in two statements, and so do their releases; the other replica sees them all', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    const ids = Array.from({ length: 2000 }, (_, i) => `con_${randomBytes(12).toString('hex')}_${i}`);
    for (const [i, connectorId] of ids.entries())
      a.claim({
        connectorId,
        sessionId: i + 1,
        remoteAddress: '2001:db8::1234:5678',
        connectedAt: clock.now(),
      });
    await a.flush();
    expect(a.statements.claim).toBe(2);
    await until(() => b.connectedElsewhere() === 2000);
    expect(b.statements.resync).toBe(1); // its start only: the notifications told it
    expect((await rows(url)).length).toBe(2000);

    for (const [i, connectorId] of ids.entries()) a.release(connectorId, i + 1);
    await a.flush();
    expect(a.statements.release).toBe(2);
    await until(() => b.connectedElsewhere() === 0);
    expect(await rows(url)).toEqual([]);
  });

  it('a deletion confirmation is recorded and announced; another replica believes the record, reads it only for the deletes it awaits, and forgets it after the retention', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    const heard: DeletionConfirmation[] = [];
    const awaited = new Set(['con_awaited', 'con_forged', 'con_sentinel']);
    b.onDeletionConfirmedElsewhere({ awaits: (id) => awaited.has(id), confirmed: (c) => heard.push(c) });

    const at = clock.now();
    a.deletionConfirmed({ connectorId: 'con_awaited', confirmedAt: at, confirmedFrom: '192.0.2.7' });
    a.deletionConfirmed({ connectorId: 'con_unawaited', confirmedAt: at, confirmedFrom: null });
    await a.flush();
    expect(a.statements.confirmation).toBe(1);
    await until(() => heard.length === 1);
    expect(heard).toEqual([{ connectorId: 'con_awaited', confirmedAt: at, confirmedFrom: '192.0.2.7' }]);
    expect(b.statements.confirmationRead).toBe(1); // the unawaited one cost no read

    // An announcement with no record behind it (any role that may connect can NOTIFY) is read, and
    // dropped; the confirmation of an awaited connector that follows it is heard.
    await withClient(url, (c) =>
      c.query(`SELECT pg_notify('agent_sessions', $1)`, [`d ${a.selfId}\ncon_forged ${at} 203.0.113.66`]),
    );
    await until(() => b.statements.confirmationRead === 2);
    a.deletionConfirmed({ connectorId: 'con_sentinel', confirmedAt: at + 1, confirmedFrom: '192.0.2.8' });
    await a.flush();
    await until(() => heard.some((c) => c.connectorId === 'con_sentinel'));
    expect(heard.map((c) => c.connectorId)).toEqual(['con_awaited', 'con_sentinel']);

    const recorded = async () =>
      withClient(url, async (c) =>
        (await c.query('SELECT connector_id FROM deletion_confirmations ORDER BY 1')).rows.map(
          (r) => r.connector_id,
        ),
      );
    expect(await recorded()).toEqual(['con_awaited', 'con_sentinel', 'con_unawaited']);
    // Kept for CONFIRMATION_RETENTION_MS, then removed with a heartbeat's reaping.
    clock.advance(CONFIRMATION_RETENTION_MS);
    await a.heartbeat();
    expect(await recorded()).toEqual(['con_awaited', 'con_sentinel', 'con_unawaited']);
    clock.advance(2);
    await a.heartbeat();
    expect(await recorded()).toEqual([]);
  });

  it('claims arriving a few ms apart wait for each other (the linger) and go out in one statement', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock, { lingerMs: 250 });
    const b = await clusterOn(url, clock);
    // Ten agents admitted 5 ms apart, as a fleet arrives: without the linger each is a statement.
    for (let i = 0; i < 10; i++) {
      a.claim({
        connectorId: `con_spread_${i}`,
        sessionId: i + 1,
        remoteAddress: '192.0.2.7',
        connectedAt: 0,
      });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await a.flush();
    expect(a.statements.claim).toBe(1);
    await until(() => b.connectedElsewhere() === 10);
    expect(b.isConnectedElsewhere('con_spread_9')).toBe(true);
  });

  it('a listener connection lost: the replica reads the others’ sessions again when it is back', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    await withClient(url, (client) =>
      client.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN agent_sessions%' AND pid <> pg_backend_pid()`,
      ),
    );
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    await until(() => b.isConnectedElsewhere('con_1'));
    expect(b.statements.resync).toBeGreaterThan(1);
  });

  it('the periodic check reads one summary row while the picture agrees, and every session when a change was missed', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    for (let i = 1; i <= 3; i++)
      a.claim({
        connectorId: `con_${i}`,
        sessionId: i,
        remoteAddress: '192.0.2.1',
        connectedAt: clock.now(),
      });
    await a.flush();
    await until(() => b.connectedElsewhere() === 3);
    const fullReads = b.statements.resync;

    for (let i = 0; i < 3; i++) await b.check();
    expect(b.statements.summary).toBe(3);
    expect(b.statements.resync).toBe(fullReads);

    // A claim and a release b never heard of (as if their notifications were lost): a's rows changed
    // behind its back, the count unchanged.
    await withClient(url, async (client) => {
      await client.query(
        `INSERT INTO agent_sessions (connector_id, replica_id, session_id, remote_address, connected_at)
         VALUES ('con_unheard', $1, nextval('agent_session_claims'), '192.0.2.9', 0)`,
        [a.replicaId],
      );
      await client.query(`DELETE FROM agent_sessions WHERE connector_id = 'con_2'`);
    });
    clock.advance(1000); // the full read drops what was last heard of before it began
    await b.check();
    expect(b.statements.resync).toBeGreaterThan(fullReads);
    expect(b.isConnectedElsewhere('con_unheard')).toBe(true);
    expect(b.isConnectedElsewhere('con_2')).toBe(false);
    expect(b.connectedElsewhere()).toBe(3);
  });

  it('every tenth periodic check reads every session even when the summary agrees', async () => {
    const url = await database();
    const clock = new ManualClock();
    const a = await clusterOn(url, clock);
    const b = await clusterOn(url, clock);
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    await until(() => b.isConnectedElsewhere('con_1'));
    const fullReads = b.statements.resync;
    for (let i = 0; i < 9; i++) await b.check();
    expect(b.statements.resync).toBe(fullReads);
    await b.check();
    expect(b.statements.resync).toBe(fullReads + 1);
    expect(b.statements.summary).toBe(9);
  });

  it('a database made by the previous version gains the session tables and keeps its records', async () => {
    await using db = await freshDatabase();
    await withClient(db.url, async (client) => {
      await migrateFirst(client, 1);
      await client.query(
        `INSERT INTO store_records (section, id, body, version) VALUES ('groups', 'grp_1', '{"name":"g"}', 1)`,
      );
    });
    // Every migration after the first is applied now, the sessions' among them.
    const later = readdirSync(MIGRATIONS_DIR)
      .filter((name) => name.endsWith('.sql'))
      .sort()
      .slice(1)
      .map((name) => name.replace(/\.sql$/, ''));
    expect(later).toContain('1764720000000_cluster-sessions');
    expect(await withClient(db.url, migrateToLatest)).toEqual(later);
    const clock = new ManualClock();
    const a = await clusterOn(db.url, clock);
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    await a.flush();
    expect(await rows(db.url)).toEqual([{ connector_id: 'con_1', replica_id: a.replicaId }]);
    await a.stop();
    const kept = await withClient(db.url, (client) => client.query(`SELECT body FROM store_records`));
    expect(kept.rows).toEqual([{ body: { name: 'g' } }]);
  });

  it('PostgreSQL restarted: claims made while it is down go out when it is back, and listeners come back', async () => {
    await using postgres = await startPostgres();
    const db = await freshDatabase(postgres.url);
    await withClient(db.url, migrateToLatest);
    const clock = new ManualClock();
    const errors = { a: 0, b: 0 };
    const a = await clusterOn(db.url, clock, { onError: () => errors.a++ });
    const b = await clusterOn(db.url, clock, { onError: () => errors.b++ });
    await postgres.stop();
    a.claim({ connectorId: 'con_1', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
    // B's listener has failed to come back at least once, and A's claim has failed at least once.
    await until(() => errors.a >= 1 && errors.b >= 2);
    await postgres.start();
    await until(() => b.isConnectedElsewhere('con_1'), 20_000);
    expect(await rows(db.url)).toEqual([{ connector_id: 'con_1', replica_id: a.replicaId }]);
  });
});
