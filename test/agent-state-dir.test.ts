import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, readIdentity, spawnAgent, waitConnected, waitForAgentStatus } from './helpers/agents.js';
import { canMount } from './helpers/mounts.js';
import { repoRoot } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

async function setup() {
  const srv = await startTestServer();
  const group = await srv.admin.groups.create.mutate({ name: 'One per dir' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { srv, key };
}

describe('one agent per state dir', () => {
  it('a second agent on a state dir in use exits 2 naming the first, which keeps its session; a lock left by a killed agent is taken over', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-one-agent-');
    const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'only'], stateDir);
    const connector = await waitConnected(srv.admin, 'only');
    const second = spawnAgent(['--server', srv.url, '--key', key], stateDir);
    expect((await second.exited).code).toBe(2);
    expect(second.output()).toContain(
      `another agent runs with the state dir ${stateDir} as pid ${first.child.pid}: stop it first`,
    );
    expect(first.child.exitCode).toBeNull();
    expect(first.output()).not.toMatch(/replaced/);
    expect((await srv.admin.connectors.get.query({ connectorId: connector.id })).connection).toBe(
      'connected',
    );

    first.kill('SIGKILL');
    await first.exited;
    expect(JSON.parse(await readFile(join(stateDir, 'agent.pid'), 'utf8'))).toMatchObject({
      pid: first.child.pid,
    });
    const third = spawnAgent(['--server', srv.url], stateDir);
    await third.waitForOutput(/connected to http/);
    third.kill('SIGTERM');
    expect((await third.exited).code).toBe(0);
    await expect(readFile(join(stateDir, 'agent.pid'))).rejects.toMatchObject({ code: 'ENOENT' });
    await rm(stateDir, { recursive: true, force: true });
  });

  it("revoked while another connector's identity was copied over its file: the agent leaves that identity alone", async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const mine = await tempDir('ce-mine-');
    const theirs = await tempDir('ce-theirs-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'mine'], mine);
    const connector = await waitConnected(srv.admin, 'mine');
    const other = spawnAgent(['--server', srv.url, '--key', key, '--name', 'theirs'], theirs);
    await waitConnected(srv.admin, 'theirs');
    other.kill('SIGTERM');
    await other.exited;
    const theirIdentity = await readFile(join(theirs, 'identity.json'), 'utf8');
    await writeFile(join(mine, 'identity.json'), theirIdentity, { mode: 0o600 });

    await srv.admin.connectors.revoke.mutate({ connectorId: connector.id });
    expect((await agent.exited).code).toBe(4);
    expect(agent.output()).toContain("now holds another connector's identity");
    expect(await readFile(join(mine, 'identity.json'), 'utf8')).toBe(theirIdentity);
    expect((await readIdentity(mine))?.connectorId).not.toBe(connector.id);
    await rm(mine, { recursive: true, force: true });
    await rm(theirs, { recursive: true, force: true });
  });

  it('its state dir removed while it runs is put back within seconds: a restart is the same connector, not a second enrollment', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-removed-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'kept'], stateDir);
    const connector = await waitConnected(srv.admin, 'kept');
    // The agent may write in it meanwhile (its status): ENOTEMPTY once in a while, retried.
    await rm(stateDir, { recursive: true, maxRetries: 10, retryDelay: 20 });
    await agent.waitForOutput(/was removed while the agent ran: it is saved again from memory/);
    await eventually('the identity back', async () => (await readIdentity(stateDir))?.connectorId);
    expect((await readIdentity(stateDir))?.connectorId).toBe(connector.id);
    expect(JSON.parse(await readFile(join(stateDir, 'agent.pid'), 'utf8')).pid).toBe(agent.child.pid);
    // Still the one agent of the dir: a second one is turned away.
    const second = spawnAgent(['--server', srv.url, '--key', key], stateDir);
    expect((await second.exited).code).toBe(2);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);

    // Restarted with its key still given (as a unit file does): the saved identity, no new connector.
    const again = spawnAgent(['--server', srv.url, '--key', key, '--name', 'kept'], stateDir);
    await again.waitForOutput(/already enrolled: using the saved identity/);
    await waitConnected(srv.admin, 'kept');
    const all = await srv.admin.connectors.list.query({});
    expect(all.items.map((c) => c.id)).toEqual([connector.id]);
    // Revoked, it still wipes what it put back.
    await srv.admin.connectors.revoke.mutate({ connectorId: connector.id });
    expect((await again.exited).code).toBe(4);
    expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('its state dir removed and the agent stopped at once (before the removal was checked): the identity is put back at exit', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-removed-stop-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'quick'], stateDir);
    const connector = await waitConnected(srv.admin, 'quick');
    // The agent may write in it meanwhile (its status): ENOTEMPTY once in a while, retried.
    await rm(stateDir, { recursive: true, maxRetries: 10, retryDelay: 20 });
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    expect((await readIdentity(stateDir))?.connectorId).toBe(connector.id);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a state dir under a directory other users may write (no sticky bit) is said at start, and the agent runs on', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const parent = await tempDir('ce-open-parent-');
    await chmod(parent, 0o777);
    const stateDir = join(parent, 'state');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'open-parent'], stateDir);
    await waitConnected(srv.admin, 'open-parent');
    expect(agent.output()).toContain(
      `${parent}, above the state dir ${stateDir}, may be written by other users (mode 0777, no sticky bit)`,
    );
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await rm(parent, { recursive: true, force: true });
  });

  it('SIGHUP (a closed terminal) stops it cleanly: exit 0, status stopped', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-hup-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'hup'], stateDir);
    await waitConnected(srv.admin, 'hup');
    agent.kill('SIGHUP');
    expect((await agent.exited).code).toBe(0);
    expect(agent.output()).toContain('received SIGHUP; stopping');
    expect(JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8'))).toMatchObject({
      state: 'stopped',
    });
    await rm(stateDir, { recursive: true, force: true });
  });

  it('its log reader going away (a closed stderr pipe) does not end it: a revoke afterwards is still carried out', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-epipe-');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'agent/main.ts',
        '--server',
        srv.url,
        '--key',
        key,
        '--name',
        'piped',
        '--state-dir',
        stateDir,
      ],
      { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    try {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const connector = await waitConnected(srv.admin, 'piped');
      child.stderr!.destroy(); // the reader leaves: the agent's next line meets EPIPE
      await srv.admin.connectors.revoke.mutate({ connectorId: connector.id });
      expect(await exited).toBe(4);
      expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
    } finally {
      child.kill('SIGKILL');
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a full state dir where the moved server list must be saved: one line, exit 1, no stack trace; a read-only one stops it at its lock', async (ctx) => {
    if (!canMount()) return ctx.skip('needs root and mount (tmpfs)');
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-ro-move-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', stateDir]);
    try {
      const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'moving'], stateDir);
      await waitConnected(srv.admin, 'moving');
      first.kill('SIGTERM');
      await first.exited;
      // Full but for one page: the agent's lock fits, the identity's new copy does not.
      execFileSync('sh', ['-c', `dd if=/dev/zero of='${stateDir}/ballast' bs=4096 2>/dev/null; true`]);
      execFileSync('truncate', ['-s', '-4096', join(stateDir, 'ballast')]);
      const otherUrl = srv.url.replace('127.0.0.1', 'localhost');
      const moved = spawnAgent(['--server', otherUrl, '--allow-server-change'], stateDir);
      expect((await moved.exited).code).toBe(1);
      expect(moved.output()).toMatch(
        /cannot write in the state dir .* \(ENOSPC: the disk is full\): the new server list is not saved with the identity/,
      );
      expect(moved.output()).not.toMatch(/\n\s+at /);
      expect(JSON.parse(await readFile(join(stateDir, 'identity.json'), 'utf8')).server).toBe(srv.url);

      // Full to the last page: even its lock cannot be written, and none is left behind, so a
      // start right after space is freed is not told that another agent runs.
      execFileSync('sh', ['-c', `dd if=/dev/zero of='${stateDir}/ballast2' bs=4096 2>/dev/null; true`]);
      const noLock = spawnAgent(['--server', srv.url], stateDir);
      expect((await noLock.exited).code).toBe(1);
      expect(noLock.output()).toContain('ENOSPC');
      expect(existsSync(join(stateDir, 'agent.pid'))).toBe(false);
      await rm(join(stateDir, 'ballast2'));
      await rm(join(stateDir, 'ballast'));
      const atOnce = spawnAgent(['--server', srv.url], stateDir);
      await waitForAgentStatus(
        stateDir,
        'connected right after space was freed',
        (st) => st.state === 'connected',
      );
      atOnce.kill('SIGTERM');
      expect((await atOnce.exited).code).toBe(0);

      execFileSync('mount', ['-o', 'remount,ro', stateDir]);
      const readOnly = spawnAgent(['--server', srv.url], stateDir);
      expect((await readOnly.exited).code).toBe(1);
      expect(readOnly.output()).toMatch(
        /cannot write in the state dir .* \(EROFS: it is on a read-only file system\)/,
      );
      expect(readOnly.output()).not.toMatch(/\n\s+at /);
    } finally {
      execFileSync('umount', [stateDir]);
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
