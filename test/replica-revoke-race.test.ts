import { afterEach, describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, type Enrolled, enrollSim, type SimSession } from './helpers/agent-sim.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Agents raced; each with its own offset between the revoke and the reconnect. */
const RACES = 24;
/**
 * How long a session admitted before the revoke reached its replica may last: the change feed's
 * bound (README "Live changes") plus the final event's wait for an acknowledgement, which a test
 * session never sends (TERMINATION_ACK_TIMEOUT_MS): the server closes it then.
 */
const ENDED_WITHIN_MS = 5000;

/** Resolves after `ms` (0: at the next turn of the loop). */
const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The agent loses its session on one replica and reconnects to another while an admin revokes it
 * through a third: whichever comes first there, it must not stay connected. The reconnect lands
 * before, during and after the revoke's commit and its trip through the change feed (offsets from
 * -20 to 260 ms: here about half were admitted and then ended, half refused at the handshake).
 */
describe('revoke racing a reconnect to another replica', () => {
  it('the reconnected session is refused or ended, never left connected, and the identity stays refused', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const servers = await startReplicas(db.url, 3);
    cleanups.push(() => stopAll(servers));
    const [a, b, c] = servers as [TestServer, TestServer, TestServer];
    const group = await a.admin.groups.create.mutate({ name: 'Race' });
    // Each revoke regenerates the group's key: enroll them all first.
    const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const agents: Array<{ enrolled: Enrolled; onA: SimSession }> = [];
    for (let i = 0; i < RACES; i++) {
      const enrolled = (await enrollSim(a.url, key, `racer-${i}`)).enrolled!;
      agents.push({ enrolled, onA: connectSim(a.url, enrolled) });
    }
    for (const { onA } of agents) await onA.waitFor('ready', 30_000);

    const outcomes = await Promise.all(
      agents.map(async ({ enrolled, onA }, i) => {
        const offsetMs = (i % 8) * 40 - 20; // -20 (reconnect first) … 260 ms after the revoke call
        const revoked = (async () => {
          if (offsetMs < 0) await pause(-offsetMs);
          return b.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
        })();
        await onA.close();
        if (offsetMs > 0) await pause(offsetMs);
        const onC = connectSim(c.url, enrolled);
        cleanups.push(() => onC.close());
        const close = await onC.waitForClose(ENDED_WITHIN_MS * 2);
        await revoked;
        return { close, admitted: onC.events.some((e) => e.type === 'ready'), events: onC.events };
      }),
    );
    for (const { close, admitted, events } of outcomes) {
      if (admitted) {
        // Admitted before C applied the revoke: C told it, then closed it.
        expect(events.map((e) => e.type)).toContain('revoked');
        expect(close.code).toBe(CLOSE_CODES.REVOKED);
      } else expect(close.code).toBe(CLOSE_CODES.REFUSED);
    }
    // Whatever the order was, every replica refuses the identity now, and none holds a session.
    for (const server of servers)
      for (const { enrolled } of agents.slice(0, 4)) {
        const again = connectSim(server.url, enrolled);
        expect((await again.waitForClose(ENDED_WITHIN_MS)).code).toBe(CLOSE_CODES.REFUSED);
      }
    for (const { enrolled } of agents) {
      const connector = await a.admin.connectors.get.query({ connectorId: enrolled.connectorId });
      expect(connector.status).toBe('revoked');
      expect(connector.connection).not.toBe('connected');
    }
  });
});
