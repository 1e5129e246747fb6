import { afterEach, describe, expect, it } from 'vitest';
import { EXIT } from '../agent/exit-codes.js';
import { TERMINATION_ACK_TIMEOUT_MS } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import {
  ACK_BOUND_UNDER_LOAD_MS,
  readIdentity,
  spawnAgent,
  waitConnected,
  waitForAgentStatus,
} from './helpers/agents.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import { type TestServer, tempDir } from './helpers/server.js';

/** An agent process starts in ~2 s on an idle machine, several times that on a loaded two-core one. */
const AGENT_START_MS = 60_000;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** `ackBoundMs`: see ACK_BOUND_UNDER_LOAD_MS (tests of a real agent's confirmation). */
async function twoReplicas(ackBoundMs?: number) {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  const servers = await startReplicas(
    db.url,
    2,
    ackBoundMs === undefined ? {} : { config: { terminationAckTimeoutMs: ackBoundMs } },
  );
  cleanups.push(() => stopAll(servers));
  const [a, b] = servers as [TestServer, TestServer];
  const group = await a.admin.groups.create.mutate({ name: 'Receipts' });
  const key = (await a.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
  return { a, b, key };
}

/**
 * A real agent enrolled and connected through B, once A shows it connected, as an admin would see it
 * before acting on A: B's claim goes out with others up to 50 ms later, then a notification, and a
 * revoke or delete sooner answers `pending`.
 */
async function agentOnB(a: TestServer, b: TestServer, key: string, name: string) {
  const stateDir = await tempDir('ce-agent-');
  const agent = spawnAgent(['--server', b.url, '--key', key, '--name', name], stateDir);
  cleanups.push(() => agent.stop('SIGTERM', 2000));
  const status = await waitForAgentStatus(
    stateDir,
    'connected to B',
    (s) => s.state === 'connected',
    AGENT_START_MS,
  );
  await waitConnected(a.admin, name, 10_000);
  return { agent, stateDir, connectorId: status.connectorId as string };
}

describe("a revoke through one replica of an agent on another: the answer's termination", () => {
  it('is confirmed when that agent acknowledged within the bound (its replica records it, the feed brings it)', async () => {
    const { a, b, key } = await twoReplicas(ACK_BOUND_UNDER_LOAD_MS);
    const { agent, stateDir, connectorId } = await agentOnB(a, b, key, 'on-b');

    const started = performance.now();
    const revoked = await a.admin.connectors.revoke.mutate({ connectorId });
    const tookMs = performance.now() - started;
    expect(revoked.termination).toMatchObject({ state: 'confirmed', confirmedFrom: '127.0.0.1' });
    expect(Date.parse(revoked.termination!.confirmedAt!)).toBeGreaterThan(0);
    expect((await agent.exited).code).toBe(EXIT.REVOKED);
    expect(await readIdentity(stateDir)).toBeNull();
    // B saw the acknowledgement itself: the same confirmation.
    expect((await b.admin.connectors.get.query({ connectorId })).termination).toEqual(revoked.termination);
    console.info(`cross-replica revoke answered confirmed in ${Math.round(tookMs)} ms`);
  });

  it('is pending when that agent does not acknowledge: the call waits the bound after the commit, no longer', async () => {
    const { a, b, key } = await twoReplicas();
    // A test session hears the final event but never acknowledges it.
    const enrolled = (await enrollSim(b.url, key, 'silent')).enrolled!;
    const session = connectSim(b.url, enrolled);
    await session.waitFor('ready');
    await expect
      .poll(
        async () => (await a.admin.connectors.get.query({ connectorId: enrolled.connectorId })).connection,
        {
          timeout: 10_000,
        },
      )
      .toBe('connected');

    const started = performance.now();
    const revoked = await a.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    const tookMs = performance.now() - started;
    expect(revoked.termination).toEqual({ state: 'pending', confirmedAt: null, confirmedFrom: null });
    expect(tookMs).toBeGreaterThanOrEqual(TERMINATION_ACK_TIMEOUT_MS);
    await session.waitFor('revoked', 5000);
    await session.close();
  });
});

describe("a delete through one replica of an agent on another: the answer's termination", () => {
  it('is confirmed when that agent acknowledged within the bound (its replica announces it to the others)', async () => {
    const { a, b, key } = await twoReplicas(ACK_BOUND_UNDER_LOAD_MS);
    const { agent, stateDir, connectorId } = await agentOnB(a, b, key, 'deleted-on-b');

    const started = performance.now();
    const deleted = await a.admin.connectors.delete.mutate({ connectorId });
    const tookMs = performance.now() - started;
    // A deleted connector has no record to carry the confirmation: without B's announcement A
    // waited the whole bound and answered pending.
    expect(deleted.termination).toMatchObject({ state: 'confirmed', confirmedFrom: '127.0.0.1' });
    expect(Date.parse(deleted.termination.confirmedAt!)).toBeGreaterThan(0);
    expect(tookMs).toBeLessThan(ACK_BOUND_UNDER_LOAD_MS);
    expect((await agent.exited).code).toBe(EXIT.IDENTITY_GONE);
    expect(await readIdentity(stateDir)).toBeNull();
  });

  it('is pending when that agent does not acknowledge, after the bound', async () => {
    const { a, b, key } = await twoReplicas();
    const enrolled = (await enrollSim(b.url, key, 'silent-deleted')).enrolled!;
    const session = connectSim(b.url, enrolled);
    await session.waitFor('ready');
    await expect
      .poll(
        async () => (await a.admin.connectors.get.query({ connectorId: enrolled.connectorId })).connection,
        { timeout: 10_000 },
      )
      .toBe('connected');

    const started = performance.now();
    const deleted = await a.admin.connectors.delete.mutate({ connectorId: enrolled.connectorId });
    expect(deleted.termination).toEqual({ state: 'pending', confirmedAt: null, confirmedFrom: null });
    expect(performance.now() - started).toBeGreaterThanOrEqual(TERMINATION_ACK_TIMEOUT_MS);
    await session.waitFor('deleted', 5000);
    await session.close();
  });
});
