import { execFile } from 'node:child_process';
import { copyFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { EXIT } from '../agent/session.js';
import { replacedCloseReason, replacingAddressOf } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { spawnAgent, waitConnected } from './helpers/agents.js';
import { repoRoot } from './helpers/processes.js';
import { startRelay } from './helpers/relay.js';
import { startTestServer, type TestServer, tempDir } from './helpers/server.js';

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : Number.NaN;
}

async function groupKey(srv: TestServer): Promise<string> {
  const group = await srv.admin.groups.create.mutate({ name: 'Cloned' });
  return (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
}

describe('clones: two processes with one identity (issue 11)', () => {
  it('the replaced agent exits 6 naming the other address and keeps its identity; the server flags, counts and shows it', async () => {
    await using srv = await startTestServer();
    const key = await groupKey(srv);
    const stateDir = await tempDir('ce-clone-a-');
    const copyDir = await tempDir('ce-clone-b-');
    const genuine = spawnAgent(['--server', srv.url, '--key', key, '--name', 'cloned'], stateDir);
    const connector = await waitConnected(srv.admin, 'cloned');
    const identityFile = await readFile(join(stateDir, 'identity.json'), 'utf8');
    await copyFile(join(stateDir, 'identity.json'), join(copyDir, 'identity.json'));

    // The copy connects from 127.0.0.2 (through the relay, so it names the relay's URL).
    const relay = await startRelay(srv.url, { localAddress: '127.0.0.2' });
    const clone = spawnAgent(['--server', relay.url, '--allow-server-change'], copyDir);
    try {
      expect((await genuine.exited).code, genuine.output()).toBe(EXIT.IDENTITY_IN_USE);
      expect(genuine.output()).toContain('127.0.0.2');
      // Not wiped: the genuine host may be the one that lost.
      expect(await readFile(join(stateDir, 'identity.json'), 'utf8')).toBe(identityFile);
      const status = JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8'));
      expect(status).toMatchObject({ state: 'replaced', detail: expect.stringContaining('127.0.0.2') });

      const view = await srv.admin.connectors.get.query({ connectorId: connector.id });
      expect(view).toMatchObject({
        connection: 'connected',
        remoteAddress: '127.0.0.2',
        lastReplacedAt: new Date(srv.clock.now()).toISOString(),
        replacedFrom: '127.0.0.1',
      });
      const listed = await srv.admin.connectors.list.query({ limit: 10 });
      expect(listed.items[0]).toMatchObject({
        lastReplacedAt: view.lastReplacedAt,
        replacedFrom: '127.0.0.1',
      });
      const replaced = await srv.admin.audit.list.query({ type: 'session.replaced' });
      expect(replaced).toHaveLength(1);
      expect(replaced[0]).toMatchObject({
        connectorId: connector.id,
        security: true,
        remoteAddress: '127.0.0.2',
        details: { previousRemoteAddress: '127.0.0.1', newRemoteAddress: '127.0.0.2' },
      });
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      expect(metric(text, 'connector_sessions_replaced_total')).toBe(1);

      clone.kill('SIGTERM');
      expect((await clone.exited).code, clone.output()).toBe(EXIT.STOPPED);
    } finally {
      clone.kill('SIGKILL');
      genuine.kill('SIGKILL');
      await relay.close();
      for (const dir of [stateDir, copyDir]) await rm(dir, { recursive: true, force: true });
    }
  });

  it('a connector never replaced shows nulls; once replaced, `connectors get` and `list` say when and from where, also after a restart', async () => {
    await using srv = await startTestServer();
    const enrolled = (await enrollSim(srv.url, await groupKey(srv), 'twice')).enrolled!;
    const before = await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId });
    expect(before).toMatchObject({ lastReplacedAt: null, replacedFrom: null });

    const first = connectSim(srv.url, enrolled);
    await first.waitFor('ready');
    const second = connectSim(srv.url, enrolled, { localAddress: '127.0.0.2' });
    await second.waitFor('ready');
    await first.waitForClose();

    const cli = (args: string[]) =>
      promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', join(repoRoot, 'server/main.ts'), 'connectors', ...args],
        {
          cwd: repoRoot,
          env: { ...process.env, CONNECTOR_SERVER: srv.url, CONNECTOR_ADMIN_KEY: srv.adminKey },
        },
      );
    const get = (await cli(['get', enrolled.connectorId])).stdout;
    expect(get).toMatch(
      /^replaced: +.*ago, the session from 127\.0\.0\.1: another host may hold this identity$/m,
    );
    const list = (await cli(['list'])).stdout;
    // LAST SEEN of a connected connector says "now", REPLACED "… ago"; one never replaced has '-'.
    const row = list.split('\n').find((l) => l.includes(enrolled.connectorId)) ?? '';
    expect(list).toContain('REPLACED');
    // One server: no replica column, and no replica line in `get`.
    expect(list).not.toContain('REPLICA');
    expect(get).not.toMatch(/^replica:/m);
    expect(row).toMatch(/ now /);
    expect(row.match(/ ago/g)).toHaveLength(1);
    await second.close();
    await first.close();

    // Written lazily with the connect, and kept across a restart.
    const shown = await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId });
    await srv.stop();
    await using again = await startTestServer({ dataDir: srv.dataDir });
    expect(await again.admin.connectors.get.query({ connectorId: enrolled.connectorId })).toMatchObject({
      lastReplacedAt: shown.lastReplacedAt,
      replacedFrom: '127.0.0.1',
    });
  });

  it('the systemd unit does not restart exit 6', async () => {
    const unit = await readFile(join(repoRoot, 'scripts/connector-agent.service'), 'utf8');
    const line = /^RestartPreventExitStatus=(.*)$/m.exec(unit)?.[1] ?? '';
    expect(line.split(/\s+/)).toContain(String(EXIT.IDENTITY_IN_USE));
    expect(EXIT.IDENTITY_IN_USE).toBe(6);
  });

  it('the close reason names the new address when it fits in a close frame, and reads back', () => {
    expect(replacedCloseReason('127.0.0.2')).toBe('SESSION_REPLACED by=127.0.0.2');
    expect(replacingAddressOf(replacedCloseReason('2001:db8::1'))).toBe('2001:db8::1');
    // An older server's reason, or one too long to carry the address: exit 6 all the same, no address.
    expect(replacingAddressOf('SESSION_REPLACED')).toBeNull();
    expect(replacedCloseReason('a'.repeat(110))).toBe('SESSION_REPLACED');
  });
});
