import { existsSync } from 'node:fs';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { processStartTicks } from '../agent/process-liveness.js';
import { buildMeta, bundleAgent } from '../scripts/build-agent/bundle.js';
import { REPO_ROOT } from '../scripts/build-agent/tools.js';
import { eventually, spawnAgent, waitConnected, waitForAgentStatus } from './helpers/agents.js';
import { spawnProcess } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** `connector-agent status [--json]` on `stateDir`, as its own process: exit code and output. */
async function status(stateDir: string, json = false) {
  const proc = spawnAgent(['status', ...(json ? ['--json'] : [])], stateDir);
  const { code } = await proc.exited;
  return { code, output: proc.output() };
}

/** An identity file the status command accepts (it checks the shape, not the signature). */
async function writeIdentity(stateDir: string) {
  const identity = {
    connectorId: 'con_status',
    groupId: 'grp_status',
    server: 'http://127.0.0.1:2',
    identityToken: 'x.y.z',
    identityExpiresAt: new Date(Date.now() + 86_400_000).toISOString(),
    privateJwk: { kty: 'OKP', crv: 'Ed25519', x: 'x', d: 'd' },
    enrolledAt: new Date().toISOString(),
  };
  await writeFile(join(stateDir, 'identity.json'), JSON.stringify(identity), { mode: 0o600 });
}

describe('connector-agent status: what runs, in words and in the exit code', () => {
  it('not enrolled 9; connected 0; server gone 7; killed with -9 8, "stopped uncleanly" with the dead pid; stopped by SIGTERM 8', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Status' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const stateDir = await tempDir('ce-status-');

    const before = await status(stateDir);
    expect(before.code).toBe(9);
    expect(before.output).toContain('enrolled:         no');
    // Nothing here says whether an agent never ran or unenroll removed its record: it says both.
    expect(before.output).toContain(
      'agent:            not running (no record of an agent here: none has run with this state dir, or unenroll removed it)',
    );

    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'watched'], stateDir);
    await waitConnected(srv.admin, 'watched');
    const pid = agent.child.pid!;
    const connected = await eventually('status says connected', async () => {
      const s = await status(stateDir);
      return s.code === 0 ? s : null;
    });
    expect(connected.output).toContain(`agent:            running as pid ${pid}, connected to ${srv.url}`);
    expect(connected.output).toContain(`enrolled via:     ${srv.url}`);

    // The server goes away: the agent runs on, retrying.
    await srv.stop();
    // Its status file, not its log: the log line comes before the file says so.
    await waitForAgentStatus(stateDir, 'status file says disconnected', (s) => s.state === 'disconnected');
    const retrying = await status(stateDir);
    expect(retrying.code).toBe(7);
    expect(retrying.output).toContain(`running as pid ${pid}, not connected`);

    agent.kill('SIGKILL');
    await agent.exited;
    const killed = await status(stateDir);
    expect(killed.code).toBe(8);
    expect(killed.output).toContain(
      `agent:            not running (last ran as pid ${pid}, stopped uncleanly`,
    );
    expect(killed.output).not.toMatch(/running as pid/);
    const json = await status(stateDir, true);
    expect(json.code).toBe(8);
    expect(JSON.parse(json.output)).toMatchObject({
      enrolled: true,
      running: false,
      connected: false,
      stoppedUncleanly: true,
      exitCode: 8,
      agent: { pid },
    });

    // A clean stop is told apart from a kill.
    const again = spawnAgent(['--server', srv.url], stateDir);
    await again.waitForOutput(/cannot connect; retrying/);
    again.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
    const stopped = await status(stateDir);
    expect(stopped.code).toBe(8);
    expect(stopped.output).toContain(`not running (last ran as pid ${again.child.pid}, exited: stopped)`);
    await rm(stateDir, { recursive: true, force: true });
  });

  it.skipIf(!existsSync('/proc/self/stat'))(
    'a pid now used by another process is not the agent: the recorded start time must match',
    async () => {
      const stateDir = await tempDir('ce-status-reuse-');
      await writeIdentity(stateDir);
      // This test's own process stands for "some live process that got the agent's old pid".
      const writeState = (pidStart: number | null) =>
        writeFile(
          join(stateDir, 'status.json'),
          JSON.stringify({
            state: 'connected',
            status: 'enabled',
            connectorId: 'con_status',
            server: 'http://127.0.0.1:2',
            updatedAt: new Date().toISOString(),
            pid: process.pid,
            pidStart,
            detail: null,
          }),
        );
      const start = processStartTicks(process.pid);
      expect(start).not.toBeNull();
      await writeState(start);
      expect((await status(stateDir)).code).toBe(0);
      await writeState(start! + 1);
      const reused = await status(stateDir);
      expect(reused.code).toBe(8);
      expect(reused.output).toContain('stopped uncleanly');
      await rm(stateDir, { recursive: true, force: true });
    },
  );

  it('a --state-dir that is a file: status and unenroll exit 2 saying so, not "not enrolled" and "nothing to unenroll"', async () => {
    const dir = await tempDir('ce-status-file-');
    const file = join(dir, 'identity.json');
    await writeFile(file, '{}', { mode: 0o600 });
    for (const command of ['status', 'unenroll']) {
      const proc = spawnAgent([command], file);
      expect((await proc.exited).code, command).toBe(2);
      expect(proc.output()).toContain(`--state-dir ${file} is not a directory`);
      expect(proc.output()).not.toMatch(/not enrolled|nothing to unenroll/);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('a damaged identity file: exit 1, saying so', async () => {
    const stateDir = await tempDir('ce-status-damaged-');
    await writeFile(join(stateDir, 'identity.json'), '{not json', { mode: 0o600 });
    const damaged = await status(stateDir);
    expect(damaged.code).toBe(1);
    expect(damaged.output).toMatch(/identity: .*damaged/);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('an identity the server refused and the agent wiped reads as that, not as deleted by an admin', async () => {
    const stateDir = await tempDir('ce-status-refused-');
    const exitedWith = async (detail: string) => {
      await writeFile(
        join(stateDir, 'status.json'),
        JSON.stringify({
          state: 'deleted',
          status: null,
          connectorId: 'con_status',
          server: 'http://127.0.0.1:2',
          updatedAt: new Date().toISOString(),
          pid: 2 ** 22 + 11,
          pidStart: 1,
          detail,
        }),
      );
      return (await status(stateDir)).output;
    };
    expect(await exitedWith('IDENTITY_INVALID')).toContain(
      'exited: its identity was refused (IDENTITY_INVALID) and wiped)',
    );
    expect(await exitedWith('CONNECTOR_NOT_FOUND')).toContain(
      'exited: deleted (the server no longer knows its connector))',
    );
    expect(await exitedWith('deleted')).toContain('exited: deleted)');
    await rm(stateDir, { recursive: true, force: true });
  });

  it('run by a user who cannot read the state dir: says so and how, not "not enrolled" and "no agent has run"', async (ctx) => {
    if (process.getuid?.() !== 0) return ctx.skip('needs root, to run status as nobody');
    const stateDir = await tempDir('ce-status-closed-');
    await writeIdentity(stateDir);
    // The agent bundled into one file nobody may read: the checkout itself may sit in a directory
    // only root can enter (a clone into mktemp -d), where nobody could not load tsx.
    const bundleDir = await tempDir('ce-status-bundle-');
    const bundle = join(bundleDir, 'agent.cjs');
    await bundleAgent(join(REPO_ROOT, 'agent/main.ts'), bundle, buildMeta(), () => {});
    await chmod(bundleDir, 0o755);
    await chmod(bundle, 0o644);
    const proc = spawnProcess(
      'runuser',
      ['-u', 'nobody', '--', process.execPath, bundle, 'status', '--state-dir', stateDir],
      { name: 'status as nobody', cwd: bundleDir },
    );
    const { code } = await proc.exited;
    expect(code).toBe(1);
    expect(proc.output()).toContain('cannot be read by this user (EACCES): run this as the agent');
    expect(proc.output()).toContain(
      'agent:            unknown (its status cannot be read by this user either)',
    );
    await rm(stateDir, { recursive: true, force: true });
    await rm(bundleDir, { recursive: true, force: true });
  });
});
