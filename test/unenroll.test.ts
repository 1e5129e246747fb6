import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, readIdentity, spawnAgent, waitConnected, waitForAgentStatus } from './helpers/agents.js';
import { startRelay } from './helpers/relay.js';
import { rawCall, startTestServer, tempDir } from './helpers/server.js';

/** A real server and a real agent enrolled and connected to it under `name`. */
async function enrolledAgent(name: string) {
  const srv = await startTestServer();
  const group = await srv.admin.groups.create.mutate({ name: `Group ${name}` });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  const stateDir = await tempDir('ce-unenroll-');
  const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', name], stateDir);
  const connector = await waitConnected(srv.admin, name);
  // Its status file says connected: the state a service leaves behind (the log line comes first).
  await waitForAgentStatus(stateDir, `${name} says connected`, (status) => status.state === 'connected');
  return { srv, stateDir, agent, connector };
}

async function runUnenroll(stateDir: string, args: string[] = []) {
  const proc = spawnAgent(['unenroll', ...args], stateDir);
  const { code } = await proc.exited;
  return { code, output: proc.output() };
}

describe('connector-agent unenroll', () => {
  it('deletes the connector on the server over its own identity (audited, actor agent) and wipes the state dir; refused while the agent runs', async () => {
    const { srv, stateDir, agent, connector } = await enrolledAgent('leaving');
    await using _ = srv;

    // Only over an agent's own authenticated session: a plain HTTP call is nobody.
    const anonymous = await rawCall(srv.url, 'agent.unenroll', undefined, { method: 'POST' });
    expect(anonymous).toMatchObject({ status: 401, reason: 'IDENTITY_INVALID' });

    const whileRunning = await runUnenroll(stateDir);
    expect(whileRunning.code).toBe(2);
    expect(whileRunning.output).toMatch(/the agent runs with this state dir as pid \d+: stop it first/);
    expect(await readIdentity(stateDir)).not.toBeNull();
    expect((await srv.admin.connectors.get.query({ connectorId: connector.id })).id).toBe(connector.id);

    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    const done = await runUnenroll(stateDir);
    expect(done.code, done.output).toBe(0);
    expect(done.output).toContain(`unenrolled: ${srv.url} deleted connector ${connector.id}; identity wiped`);
    expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
    expect(existsSync(join(stateDir, 'status.json'))).toBe(false);
    expect((await srv.admin.connectors.list.query({})).items).toEqual([]);
    const audit = await srv.admin.audit.list.query({});
    expect(audit.find((e) => e.type === 'connector.deleted')).toMatchObject({
      actor: { kind: 'agent', connectorId: connector.id },
      connectorId: connector.id,
      outcome: 'success',
    });
    // It said it wiped the identity, over the session the delete ended.
    await eventually('deletion confirmed', async () =>
      (await srv.admin.audit.list.query({})).some((e) => e.type === 'connector.deletion_confirmed'),
    );

    const again = spawnAgent(['status'], stateDir);
    expect((await again.exited).code).toBe(9);
    // Again, by its alias: nothing left to do, and it says so.
    const alias = spawnAgent(['logout'], stateDir);
    expect((await alias.exited).code).toBe(0);
    expect(alias.output()).toContain('nothing to unenroll');
    await rm(stateDir, { recursive: true, force: true });
  });

  it('--even-if-running stops the running agent first (SIGTERM: exit 0, not replaced as a clone), then deletes and wipes', async () => {
    const { srv, stateDir, agent, connector } = await enrolledAgent('running');
    await using _ = srv;
    const unenrolled = await runUnenroll(stateDir, ['--even-if-running']);
    expect(unenrolled.code, unenrolled.output).toBe(0);
    expect(unenrolled.output).toMatch(/stopped the agent that ran as pid \d+ \(SIGTERM\)/);
    expect(unenrolled.output).toContain(`deleted connector ${connector.id}`);
    expect((await agent.exited).code).toBe(0);
    expect(agent.output()).not.toMatch(/replaced this one|identity in use/);
    expect(await readIdentity(stateDir)).toBeNull();
    await expect(srv.admin.connectors.get.query({ connectorId: connector.id })).rejects.toMatchObject({
      data: { reason: 'CONNECTOR_NOT_FOUND' },
    });
    await rm(stateDir, { recursive: true, force: true });
  });

  it('--even-if-running with no server answering: the running agent is left running, nothing changed (exit 10)', async () => {
    const { srv, stateDir, agent, connector } = await enrolledAgent('kept-running');
    await srv.stop();
    const refused = await runUnenroll(stateDir, ['--even-if-running']);
    expect(refused.code, refused.output).toBe(10);
    expect(refused.output).toMatch(
      /cannot reach http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED.*: nothing changed, and the agent running as pid \d+ was left running/,
    );
    expect(refused.output).not.toContain('stopped the agent');
    // Still running: it used to be stopped first, leaving the host offline for an unenroll that
    // could not happen.
    expect(agent.exit()).toBeNull();
    expect((await readIdentity(stateDir))?.connectorId).toBe(connector.id);
    agent.kill('SIGTERM');
    await agent.exited;
    await rm(stateDir, { recursive: true, force: true });
  });

  it('names the server that deleted the connector: of its list, the one it reached, not the one it enrolled through', async () => {
    const srv = await startTestServer();
    await using _ = srv;
    const group = await srv.admin.groups.create.mutate({ name: 'Moved' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const relay = await startRelay(srv.url);
    const stateDir = await tempDir('ce-unenroll-');
    // Enrolled through the relay (a replica, say), then given both addresses.
    const first = spawnAgent(['--server', relay.url, '--key', key, '--name', 'moved'], stateDir);
    await waitConnected(srv.admin, 'moved');
    first.kill('SIGTERM');
    await first.exited;
    const widened = spawnAgent(['--server', `${relay.url},${srv.url}`, '--allow-server-change'], stateDir);
    await waitForAgentStatus(stateDir, 'connected with both', (status) => status.state === 'connected');
    widened.kill('SIGTERM');
    await widened.exited;
    expect(((await readIdentity(stateDir)) as unknown as { server: string }).server).toBe(relay.url);
    // The relay gone: the unenroll reaches the server itself.
    await relay.close();
    const done = await runUnenroll(stateDir);
    expect(done.code, done.output).toBe(0);
    expect(done.output).toMatch(/unenrolled: (\S+) deleted connector/);
    expect(/unenrolled: (\S+) deleted connector/.exec(done.output)?.[1]).toBe(srv.url);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('the server unreachable: exit 10 and nothing changed; --force wipes here and says the server still lists it and how to delete it', async () => {
    const { srv, stateDir, agent, connector } = await enrolledAgent('stranded');
    agent.kill('SIGTERM');
    await agent.exited;
    await srv.stop();

    const refused = await runUnenroll(stateDir);
    expect(refused.code).toBe(10);
    expect(refused.output).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    expect(refused.output).toContain(`nothing changed: connector ${connector.id} is still enrolled`);
    expect(refused.output).toContain('--force');
    expect((await readIdentity(stateDir))?.connectorId).toBe(connector.id);

    const forced = await runUnenroll(stateDir, ['--force']);
    expect(forced.code).toBe(0);
    expect(forced.output).toContain(
      `identity wiped (--force), but ${srv.url} was not told and still lists connector ${connector.id}: ` +
        `delete it on the admin side: npm run -s server -- connectors delete ${connector.id}`,
    );
    expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
    expect(existsSync(join(stateDir, 'status.json'))).toBe(false);

    // The server, back, still has it: exactly what the message said.
    await using back = await startTestServer({ dataDir: srv.dataDir });
    expect((await back.admin.connectors.get.query({ connectorId: connector.id })).id).toBe(connector.id);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a server that takes the connection but never answers: exit 10 within --timeout, not half a minute later', async () => {
    const { srv, stateDir, agent, connector } = await enrolledAgent('silent');
    agent.kill('SIGTERM');
    await agent.exited;
    const port = srv.server.port;
    await srv.stop();
    // On the server's own address: accepts, reads, never answers (a hung process, a black hole).
    const held = new Set<Socket>();
    const silent = createServer((socket) => void held.add(socket));
    await new Promise<void>((resolve) => silent.listen(port, '127.0.0.1', resolve));
    try {
      const proc = spawnAgent(['unenroll', '--timeout', '2'], stateDir);
      await proc.waitForOutput(/within 2 s/, 60_000);
      const saidAt = performance.now();
      const { code } = await proc.exited;
      expect(code).toBe(10);
      // From giving up to exiting: it waited ~30 s for the websocket's closing handshake.
      expect(performance.now() - saidAt).toBeLessThan(10_000);
      expect((await readIdentity(stateDir))?.connectorId).toBe(connector.id);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
