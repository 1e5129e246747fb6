import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  eventually,
  identityMode,
  readIdentity,
  spawnAgent,
  waitConnected,
  waitForAgentStatus,
} from './helpers/agents.js';
import { startTestServer, tempDir } from './helpers/server.js';

async function setup(options: Parameters<typeof startTestServer>[0] = {}) {
  const srv = await startTestServer(options);
  const group = await srv.admin.groups.create.mutate({ name: 'Live' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { srv, group, key };
}

describe('the agent against a live server (child processes, real websockets)', () => {
  it('enrolls, saves its identity 0600, connects, reports real host facts; disable/enable are pushed live and keep the identity', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-agent-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'alpha'], stateDir);
    const connector = await waitConnected(srv.admin, 'alpha');
    expect(await identityMode(stateDir)).toBe(0o600);
    const identity = await readIdentity(stateDir);
    expect(identity?.connectorId).toBe(connector.id);
    const withFacts = await eventually('host facts', async () => {
      const c = await srv.admin.connectors.get.query({ connectorId: connector.id });
      return c.host.cpus > 0 && c.host.memoryBytes > 0 ? c : null;
    });
    expect(withFacts.host.hostname.length).toBeGreaterThan(0);
    expect(withFacts.agentVersion).toMatch(/^\d+\.\d+\.\d+/);

    // The agent's own account of each push: its status file, as `connector-agent status` shows it.
    const toldOf = (status: 'enabled' | 'disabled', detail: string) =>
      waitForAgentStatus(
        stateDir,
        detail,
        (s) => s.state === 'connected' && s.status === status && s.detail === detail,
      );
    await srv.admin.connectors.disable.mutate({ connectorId: connector.id });
    await toldOf('disabled', 'connector disabled');
    await srv.admin.connectors.enable.mutate({ connectorId: connector.id });
    await toldOf('enabled', 'connector enabled');
    await srv.admin.groups.disable.mutate({ groupId: connector.groupId });
    await toldOf('disabled', 'group disabled');
    expect((await srv.admin.connectors.get.query({ connectorId: connector.id })).connection).toBe(
      'connected',
    );
    expect((await readIdentity(stateDir))?.identityToken).toBe(identity?.identityToken);

    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    expect(existsSync(join(stateDir, 'identity.json'))).toBe(true);
    await eventually(
      'disconnected',
      async () =>
        (await srv.admin.connectors.get.query({ connectorId: connector.id })).connection === 'disconnected',
    );
    await rm(stateDir, { recursive: true, force: true });
  });

  it('revoke: the agent exits 4 within 1 s of the call returning, wipes its identity, the group key changes, a second agent stays connected', async () => {
    const { srv, group, key } = await setup();
    await using _ = srv;
    const dirs = [await tempDir('ce-a1-'), await tempDir('ce-a2-')];
    const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'first'], dirs[0]!);
    const second = spawnAgent(['--server', srv.url, '--key', key, '--name', 'second'], dirs[1]!);
    const target = await waitConnected(srv.admin, 'first');
    const survivor = await waitConnected(srv.admin, 'second');
    // Revoke connected, settled agents (both have reported their host facts), as in production,
    // rather than processes still busy starting up on a two-core machine.
    for (const id of [target.id, survivor.id]) {
      await eventually(
        'host facts reported',
        async () => (await srv.admin.connectors.get.query({ connectorId: id })).host.cpus > 0,
      );
    }
    const exitAt = first.exited.then((r) => ({ ...r, at: Date.now() }));
    await srv.admin.connectors.revoke.mutate({ connectorId: target.id, reason: 'e2e' });
    const returnedAt = Date.now();
    const exit = await exitAt;
    expect(exit.code).toBe(4);
    expect(exit.at - returnedAt, `${new Date(returnedAt).toISOString()}\n${first.output()}`).toBeLessThan(
      1000,
    );
    expect(existsSync(join(dirs[0]!, 'identity.json'))).toBe(false);
    const newKey = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(newKey.key).not.toBe(key);
    expect((await srv.admin.connectors.get.query({ connectorId: survivor.id })).connection).toBe('connected');
    expect((await srv.admin.connectors.get.query({ connectorId: target.id })).status).toBe('revoked');
    second.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('delete: the agent exits 5 and wipes its identity; running it again without a key is a usage error', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-del-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'doomed'], stateDir);
    const connector = await waitConnected(srv.admin, 'doomed');
    await srv.admin.connectors.delete.mutate({ connectorId: connector.id });
    expect((await agent.exited).code).toBe(5);
    expect(await readIdentity(stateDir)).toBeNull();
    // It tells what happened and what brings the host back, and does not guess who deleted it.
    expect(agent.output()).toContain(
      'this connector was deleted on the server: its identity is wiped; enroll the host again with a provisioning key',
    );
    const again = spawnAgent(['--server', srv.url], stateDir);
    expect((await again.exited).code).toBe(2);
    expect(again.output()).toContain('no provisioning key');
    await rm(stateDir, { recursive: true, force: true });
  });

  it('force-deleting the group ends its agents with exit 5', async () => {
    const { srv, group, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-gdel-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'grouped'], stateDir);
    await waitConnected(srv.admin, 'grouped');
    await srv.admin.groups.delete.mutate({ groupId: group.id, force: true });
    expect((await agent.exited).code).toBe(5);
    expect(await readIdentity(stateDir)).toBeNull();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('refused enrollment exits 3 naming the reason and the fix', async () => {
    const { srv, group, key } = await setup();
    await using _ = srv;
    await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    const stateDir = await tempDir('ce-ref-');
    const agent = spawnAgent(['--server', srv.url, '--key', key], stateDir);
    expect((await agent.exited).code).toBe(3);
    expect(agent.output()).toContain('KEY_SUPERSEDED');
    expect(agent.output()).toContain('current key');
    expect(await readIdentity(stateDir)).toBeNull();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('server restart: agents reconnect by themselves without enrolling again; a later run ignores the key, saying so', async () => {
    const { srv, group, key } = await setup();
    const stateDir = await tempDir('ce-restart-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'phoenix'], stateDir);
    const before = await waitConnected(srv.admin, 'phoenix');
    // Connected by its own account too: the server counts the session a moment before the agent
    // hears `ready`, and a stop in between reads to the agent as a failed connect, not a lost session.
    await waitForAgentStatus(stateDir, 'phoenix says connected', (status) => status.state === 'connected');
    const port = srv.server.port;
    await srv.stop();
    await agent.waitForOutput(/disconnected; reconnecting/);
    // The line says when the next try comes and why the last one ended, in words as well as the code.
    expect(agent.output()).toMatch(
      /disconnected; reconnecting in \d+\.\d s {2}\(cause=[a-z][^)]+ \(code 10\d\d\)\)$/m,
    );
    await using again = await startTestServer({ dataDir: srv.dataDir, config: { port } });
    const after = await waitConnected(again.admin, 'phoenix', 30_000);
    expect(after.id).toBe(before.id);
    expect((await again.admin.provisioningKeys.get.query({ groupId: group.id })).enrollments).toBe(1);
    agent.kill('SIGINT');
    expect((await agent.exited).code).toBe(0);

    const rerun = spawnAgent(
      ['--server', again.url, '--key', `cpk_${'a'.repeat(12)}_${'b'.repeat(43)}`],
      stateDir,
    );
    await rerun.waitForOutput(/already enrolled.*ignoring the provisioning key/);
    await waitConnected(again.admin, 'phoenix');
    rerun.kill('SIGTERM');
    expect((await rerun.exited).code).toBe(0);
    expect((await again.admin.connectors.counts.query({})).total).toBe(1);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a key that expired after enrollment does not stop the agent from reconnecting (behaviour 3)', async () => {
    // Keys may live any positive duration; a one-minute key lets the clock pass its expiry while
    // staying within the proofs' clock-skew tolerance of the agent's real clock.
    const { srv, group, key } = await setup({ config: { keyTtlMs: 60_000 } });
    await using _ = srv;
    const stateDir = await tempDir('ce-exp-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'veteran'], stateDir);
    await waitConnected(srv.admin, 'veteran');
    agent.kill('SIGTERM');
    await agent.exited;
    srv.clock.advance(61_000);
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).status).toBe('expired');
    const rerun = spawnAgent(['--server', srv.url, '--key', key], stateDir);
    await waitConnected(srv.admin, 'veteran');
    rerun.kill('SIGTERM');
    expect((await rerun.exited).code).toBe(0);
    expect(rerun.output()).toContain('already enrolled');
    await rm(stateDir, { recursive: true, force: true });
  });

  it('renews the identity of a connected agent when a third of its life is left; the agent saves it', async () => {
    const { srv, key } = await setup({ config: { identityTtlMs: 3 * 60_000 } });
    await using _ = srv;
    const stateDir = await tempDir('ce-renew-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'renewer'], stateDir);
    const connector = await waitConnected(srv.admin, 'renewer');
    const original = await readIdentity(stateDir);
    srv.clock.advance(119_000);
    expect(await srv.server.hub.renewDueIdentities()).toBe(0);
    srv.clock.advance(2_000);
    expect(await srv.server.hub.renewDueIdentities()).toBe(1);
    await agent.waitForOutput(/identity renewed/);
    const renewed = await eventually('identity saved', async () => {
      const current = await readIdentity(stateDir);
      return current && current.identityToken !== original?.identityToken ? current : null;
    });
    expect(renewed.connectorId).toBe(connector.id);
    expect(await identityMode(stateDir)).toBe(0o600);
    const view = await srv.admin.connectors.get.query({ connectorId: connector.id });
    expect(Date.parse(view.identity.expiresAt)).toBe(
      Math.floor((srv.clock.now() + 3 * 60_000) / 1000) * 1000,
    );
    // The renewed identity opens sessions: restart the agent on it.
    agent.kill('SIGTERM');
    await agent.exited;
    const rerun = spawnAgent(['--server', srv.url], stateDir);
    await rerun.waitForOutput(/connected to/);
    rerun.kill('SIGTERM');
    expect((await rerun.exited).code).toBe(0);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('agent status shows the enrollment and the last state without printing secrets', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-status-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'statused'], stateDir);
    const connector = await waitConnected(srv.admin, 'statused');
    const status = spawnAgent(['status', '--json'], stateDir);
    await status.exited;
    const parsed = JSON.parse(status.output());
    expect(parsed).toMatchObject({
      enrolled: true,
      connectorId: connector.id,
      agent: { state: 'connected', status: 'enabled' },
    });
    const identity = await readIdentity(stateDir);
    expect(status.output()).not.toContain(identity!.identityToken);
    expect(status.output()).not.toContain(identity!.privateJwk.d);
    agent.kill('SIGTERM');
    await agent.exited;
    const text = spawnAgent(['status'], stateDir);
    await text.exited;
    expect(text.output()).toContain(`yes, as ${connector.id}`);
    expect(await readFile(join(stateDir, 'status.json'), 'utf8')).toContain('"stopped"');
    await rm(stateDir, { recursive: true, force: true });
  });

  it('usage errors exit 2: no server, a plain http URL to a non-loopback host, both key flags', async () => {
    const stateDir = await tempDir('ce-usage-');
    for (const args of [
      [],
      ['--server', 'http://example.com'],
      ['--server', 'http://127.0.0.1:2', '--key', 'a', '--key-file', 'b'],
      ['--bogus'],
    ]) {
      const agent = spawnAgent(args, stateDir);
      expect((await agent.exited).code, args.join(' ')).toBe(2);
    }
    await rm(stateDir, { recursive: true, force: true });
  });
});
