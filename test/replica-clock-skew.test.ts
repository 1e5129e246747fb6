import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

/** Seconds, not a deployment's 5 s and 15 s; the skew is past the dead bound. */
const TIMING = { replicaHeartbeatMs: 250, replicaDeadAfterMs: 3000 };
const SKEW_MS = 60_000;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** A wall clock `offsetMs` away from this host's (a replica host whose time sync failed). */
function offClock(offsetMs: number): ManualClock {
  const clock = new ManualClock();
  clock.now = () => Date.now() + offsetMs;
  return clock;
}

async function skewedPair(offsetMs: number) {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  const logOfA: Array<{ level: number; msg: string; skewSeconds?: number }> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logOfA.push(JSON.parse(line)) });
  // The replica with the earlier clock starts first: the signing key it makes is active for both.
  const first = (await startReplicas(db.url, 1, {
    config: TIMING,
    clock: offClock(Math.min(0, offsetMs)),
    ...(offsetMs < 0 ? { loggerOf: () => logger } : {}),
  })) as [TestServer];
  cleanups.push(() => stopAll(first));
  const second = (await startReplicas(db.url, 1, {
    config: TIMING,
    joining: first[0],
    clock: offClock(Math.max(0, offsetMs)),
    ...(offsetMs > 0 ? { loggerOf: () => logger } : {}),
  })) as [TestServer];
  cleanups.push(() => stopAll(second));
  /** A is the replica whose clock is off; B keeps this host's time and holds the session. */
  const [a, b] = offsetMs < 0 ? [first[0], second[0]] : [second[0], first[0]];
  const group = await b.admin.groups.create.mutate({ name: 'Skew' });
  const key = (await b.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
  const enrolled = (await enrollSim(b.url, key, 'held-by-b')).enrolled!;
  const session = connectSim(b.url, enrolled);
  await session.waitFor('ready');
  return { a, b, session, connectorId: enrolled.connectorId, logOfA };
}

describe('replicas whose clocks disagree (a host whose time sync failed)', () => {
  for (const [label, offsetMs] of [
    ['a minute ahead', SKEW_MS],
    ['a minute behind', -SKEW_MS],
  ] as const) {
    it(`a replica ${label} neither reaps the others nor is reaped: liveness is judged by the database's clock`, async () => {
      const { a, b, session, connectorId, logOfA } = await skewedPair(offsetMs);
      await eventually('A sees the session held by B', async () => {
        const c = await a.admin.connectors.get.query({ connectorId });
        return c.connection === 'connected';
      });
      // Past the dead bound and a dozen heartbeats of each: a replica judging by its own clock would
      // have reaped the other (or been reaped) by now, ending the session (1012).
      await sleep(TIMING.replicaDeadAfterMs * 2);
      expect(session.closes).toEqual([]);
      for (const replica of [a, b]) {
        const view = await replica.admin.replicas.list.query();
        expect(view.replicas).toHaveLength(2);
        for (const r of view.replicas) {
          expect(r.state).toBe('live');
          expect(r.heartbeatAgeMs).toBeLessThan(TIMING.replicaDeadAfterMs);
        }
      }
      expect((await a.admin.connectors.get.query({ connectorId })).connection).toBe('connected');
      expect((await b.admin.connectors.get.query({ connectorId })).connection).toBe('connected');
      // Its operator is told, once: what this host dates by its own clock is still off.
      const told = logOfA.filter((l) => l.msg.startsWith("this host's clock is"));
      expect(told).toHaveLength(1);
      expect(told[0]).toMatchObject({ level: 40 });
      expect(told[0]!.msg).toContain(
        offsetMs > 0 ? 'ahead of the database server' : 'behind the database server',
      );
      expect(Math.abs(told[0]!.skewSeconds! - offsetMs / 1000)).toBeLessThan(1);
    });
  }

  it('a replica a minute behind, joining a deployment made a moment ago, is told its clock is behind', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const [first] = (await startReplicas(db.url, 1, { config: TIMING })) as [TestServer];
    cleanups.push(() => stopAll([first]));
    // Its signing key activates when it was made, by the first replica's clock: not yet, by this one's.
    await expect(
      startReplicas(db.url, 1, { config: TIMING, joining: first, clock: offClock(-SKEW_MS) }),
    ).rejects.toThrow(
      /no signing key is active .* 6\d s from now by this host's clock: .* this host's clock is behind/,
    );
  });
});
