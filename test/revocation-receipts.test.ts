import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CLOSE_CODES, TERMINATION_ACK_TIMEOUT_MS } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import {
  ACK_BOUND_UNDER_LOAD_MS,
  eventually,
  readIdentity,
  spawnAgent,
  waitConnected,
} from './helpers/agents.js';
import { repoRoot } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** The admin CLI against a test server, as `npm run -s server -- ARGS` runs it. */
async function cli(srv: { url: string; adminKey: string }, args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', join(repoRoot, 'server/main.ts'), ...args, '--server', srv.url],
    { cwd: repoRoot, env: { ...process.env, CONNECTOR_ADMIN_KEY: srv.adminKey } },
  );
  return stdout;
}

/** `ackBoundMs`: see ACK_BOUND_UNDER_LOAD_MS (tests of a real agent's confirmation). */
async function setup(ackBoundMs?: number) {
  const srv = await startTestServer(
    ackBoundMs === undefined ? {} : { config: { terminationAckTimeoutMs: ackBoundMs } },
  );
  const group = await srv.admin.groups.create.mutate({ name: 'Receipts' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { srv, group, key };
}

/** A real agent, connected and settled (its host facts reported), as in production. */
async function liveAgent(srv: Awaited<ReturnType<typeof setup>>['srv'], key: string, name: string) {
  const stateDir = await tempDir('ce-receipt-');
  const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', name], stateDir);
  const connector = await waitConnected(srv.admin, name);
  await eventually(
    'host facts reported',
    async () => (await srv.admin.connectors.get.query({ connectorId: connector.id })).host.cpus > 0,
  );
  return { agent, connector, stateDir };
}

describe('revocation receipts: revoke and delete say whether the host heard it', () => {
  it('a live agent acknowledges: revoke answers confirmed within the bound, the agent exits 4 with its identity wiped', async () => {
    const { srv, key } = await setup(ACK_BOUND_UNDER_LOAD_MS);
    await using _ = srv;
    const { agent, connector, stateDir } = await liveAgent(srv, key, 'heard');
    const startedAt = Date.now();
    const revoked = await srv.admin.connectors.revoke.mutate({
      connectorId: connector.id,
      reason: 'receipt',
    });
    const tookMs = Date.now() - startedAt;
    const confirmedAt = new Date(srv.clock.now()).toISOString();
    expect(revoked.status).toBe('revoked');
    expect(revoked.termination).toEqual({ state: 'confirmed', confirmedAt, confirmedFrom: '127.0.0.1' });
    // As soon as the acknowledgement came, not at the bound.
    expect(tookMs, agent.output()).toBeLessThan(ACK_BOUND_UNDER_LOAD_MS);
    expect((await agent.exited).code).toBe(4);
    expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
    const shown = await srv.admin.connectors.get.query({ connectorId: connector.id });
    expect(shown.termination).toEqual(revoked.termination);
    const listed = await srv.admin.connectors.list.query({ status: 'revoked' });
    expect(listed.items.find((c) => c.id === connector.id)?.termination).toEqual(revoked.termination);
    // Recorded as the acknowledgement came, a write nobody waits for: on a loaded machine it may
    // land just after the answer (a full run once listed none yet).
    const audit = await eventually('audited', async () => {
      const events = await srv.admin.audit.list.query({ type: 'connector.revocation_confirmed' });
      return events.length > 0 ? events : null;
    });
    expect(audit).toMatchObject([
      { connectorId: connector.id, remoteAddress: '127.0.0.1', details: { via: 'acknowledgement' } },
    ]);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('an offline agent: pending; confirmed, with the time and address, when it next connects and is refused (it exits 4 and wipes)', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const { agent, connector, stateDir } = await liveAgent(srv, key, 'asleep');
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await eventually(
      'disconnected',
      async () =>
        (await srv.admin.connectors.get.query({ connectorId: connector.id })).connection === 'disconnected',
    );
    const revoked = await srv.admin.connectors.revoke.mutate({ connectorId: connector.id });
    expect(revoked.termination).toEqual({ state: 'pending', confirmedAt: null, confirmedFrom: null });
    expect((await srv.admin.connectors.get.query({ connectorId: connector.id })).termination?.state).toBe(
      'pending',
    );

    // Within the proofs' allowed clock skew: the agent signs with the real time.
    srv.clock.advance(60_000);
    const again = spawnAgent(['--server', srv.url], stateDir);
    expect((await again.exited).code).toBe(4);
    expect(await readIdentity(stateDir)).toBeNull();
    const shown = await eventually('confirmed', async () => {
      const c = await srv.admin.connectors.get.query({ connectorId: connector.id });
      return c.termination?.state === 'confirmed' ? c : null;
    });
    expect(shown.termination).toEqual({
      state: 'confirmed',
      confirmedAt: new Date(srv.clock.now()).toISOString(),
      confirmedFrom: '127.0.0.1',
    });
    const audit = await eventually('audited', async () => {
      const events = await srv.admin.audit.list.query({ type: 'connector.revocation_confirmed' });
      return events.length > 0 ? events : null;
    });
    expect(audit).toMatchObject([
      { connectorId: connector.id, remoteAddress: '127.0.0.1', details: { via: 'handshake' } },
    ]);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a client that gets the revoked event but never acknowledges: pending at the bound, closed then, and never confirmed', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const enrolled = (await enrollSim(srv.url, key, 'silent')).enrolled!;
    const sim = connectSim(srv.url, enrolled);
    await sim.waitFor('ready');
    const startedAt = Date.now();
    const revoked = await srv.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    const tookMs = Date.now() - startedAt;
    expect(revoked.termination).toEqual({ state: 'pending', confirmedAt: null, confirmedFrom: null });
    expect(tookMs).toBeGreaterThanOrEqual(TERMINATION_ACK_TIMEOUT_MS - 50);
    // No longer than the bound, give or take a loaded machine's scheduling.
    expect(tookMs).toBeLessThan(TERMINATION_ACK_TIMEOUT_MS + 1000);
    await sim.waitFor('revoked');
    expect(await sim.waitForClose()).toEqual({ code: CLOSE_CODES.REVOKED, reason: 'CONNECTOR_REVOKED' });
    // Still pending after the close: nothing confirms it later but the identity's next handshake.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId })).termination).toEqual(
      { state: 'pending', confirmedAt: null, confirmedFrom: null },
    );
    expect(await srv.admin.audit.list.query({ type: 'connector.revocation_confirmed' })).toEqual([]);
    await sim.close();
  });

  it("waits the server's own bound when it is given one (tests of real agents lengthen it)", async () => {
    const boundMs = 1500;
    const { srv, key } = await setup(boundMs);
    await using _ = srv;
    const enrolled = (await enrollSim(srv.url, key, 'silent-longer')).enrolled!;
    const sim = connectSim(srv.url, enrolled);
    await sim.waitFor('ready');
    const startedAt = Date.now();
    const revoked = await srv.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    expect(revoked.termination).toEqual({ state: 'pending', confirmedAt: null, confirmedFrom: null });
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(boundMs - 50);
    await sim.close();
  });

  it('a live session that was not ended cannot acknowledge anything', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const enrolled = (await enrollSim(srv.url, key, 'eager')).enrolled!;
    const sim = connectSim(srv.url, enrolled);
    await sim.waitFor('ready');
    await expect(sim.client.agent.acknowledge.mutate({ event: 'revoked' })).rejects.toMatchObject({
      data: { reason: 'IDENTITY_INVALID' },
    });
    const revoked = await srv.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    expect(revoked.termination?.state).toBe('pending');
    await sim.close();
  });

  it('the CLI says it in words; a confirmation at a handshake is stored and survives a restart', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const enrolled = (await enrollSim(srv.url, key, 'never-seen')).enrolled!;
    const id = enrolled.connectorId;
    expect(await cli(srv, ['connectors', 'revoke', id])).toContain(
      `Connector ${id} revoked; not yet confirmed by the host`,
    );
    expect(await cli(srv, ['connectors', 'list'])).toContain('revoked (pending)');
    // Within the proofs' allowed skew of the real time, on a whole second.
    srv.clock.set(Math.floor(Date.now() / 1000) * 1000 + 30_000);
    const confirmedAt = new Date(srv.clock.now()).toISOString();
    const late = connectSim(srv.url, enrolled);
    expect(await late.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'CONNECTOR_REVOKED' });
    await late.close();
    await eventually('confirmation audited', async () => {
      const events = await srv.admin.audit.list.query({ type: 'connector.revocation_confirmed' });
      return events.length === 1;
    });
    expect(await cli(srv, ['connectors', 'get', id])).toContain(
      `revoked; the host confirmed it at ${confirmedAt} from 127.0.0.1`,
    );
    await srv.stop();
    await using again = await startTestServer({ dataDir: srv.dataDir, clock: srv.clock });
    expect((await again.admin.connectors.get.query({ connectorId: id })).termination).toEqual({
      state: 'confirmed',
      confirmedAt,
      confirmedFrom: '127.0.0.1',
    });
    // Deleted afterwards: nothing is left on that host to confirm, and the CLI does not ask for it.
    expect(await cli(again, ['connectors', 'delete', id])).toContain(
      `Connector ${id} deleted; it was revoked, and its host had already wiped its identity.`,
    );
    const offline = (
      await enrollSim(
        again.url,
        (
          await again.admin.provisioningKeys.get.query({ groupId: enrolled.groupId })
        ).key!,
        'offline',
      )
    ).enrolled!;
    expect(await cli(again, ['connectors', 'delete', offline.connectorId])).toContain(
      `Connector ${offline.connectorId} deleted; its host is not connected: it is told at its next connection`,
    );
  });

  it('connectors revoke and delete print the time the host confirmed in ISO 8601, as every time the CLI prints', async () => {
    const { srv, group } = await setup(ACK_BOUND_UNDER_LOAD_MS);
    await using _ = srv;
    const confirmedAt = new Date(srv.clock.now()).toISOString();
    for (const [verb, name, exit] of [
      ['revoke', 'told-revoked', 4],
      ['delete', 'told-deleted', 5],
    ] as const) {
      // The group's current key: a revoke regenerates it.
      const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const { agent, connector, stateDir } = await liveAgent(srv, key, name);
      const said = await cli(srv, ['connectors', verb, connector.id]);
      expect(said, agent.output()).toContain(
        `Connector ${connector.id} ${verb}d; the host confirmed it at ${confirmedAt} from 127.0.0.1.`,
      );
      expect((await agent.exited).code).toBe(exit);
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('delete of a live agent answers confirmed; the agent exits 5 with its identity wiped', async () => {
    const { srv, key } = await setup(ACK_BOUND_UNDER_LOAD_MS);
    await using _ = srv;
    const { agent, connector, stateDir } = await liveAgent(srv, key, 'removed');
    const deleted = await srv.admin.connectors.delete.mutate({ connectorId: connector.id });
    // Once seen `pending` in 1.1 s in a loaded full run (no session held at the delete): the
    // agent's output says whether it had reconnected just then.
    expect(deleted, agent.output()).toEqual({
      deleted: true,
      termination: {
        state: 'confirmed',
        confirmedAt: new Date(srv.clock.now()).toISOString(),
        confirmedFrom: '127.0.0.1',
      },
    });
    expect((await agent.exited).code).toBe(5);
    expect(await readIdentity(stateDir)).toBeNull();
    const audit = await eventually('audited', async () => {
      const events = await srv.admin.audit.list.query({ type: 'connector.deletion_confirmed' });
      return events.length > 0 ? events : null;
    });
    expect(audit).toMatchObject([{ connectorId: connector.id, remoteAddress: '127.0.0.1' }]);
    await rm(stateDir, { recursive: true, force: true });
  });
});
