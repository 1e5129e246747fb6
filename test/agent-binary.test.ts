import { existsSync } from 'node:fs';
import { copyFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { osRelease } from '../agent/host-facts.js';
import pkg from '../package.json' with { type: 'json' };
import { type BuildAgentResult, buildAgent } from '../scripts/build-agent.js';
import { eventually, identityMode, spawnBinary, waitConnected } from './helpers/agents.js';
import { spawnProcess } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('the agent as one executable (Node SEA)', () => {
  let outDir: string;
  let build: BuildAgentResult;

  beforeAll(async () => {
    // Its own output folder, so that it never races the demo's build into dist/.
    outDir = await tempDir('ce-build-');
    build = await buildAgent({ outDir, log: () => {} });
  }, 240_000);
  afterAll(async () => {
    await rm(outDir, { recursive: true, force: true });
  });

  it('runs with no node and no node_modules: version and --version print the version, build time and commit', async () => {
    const home = await tempDir('ce-bin-');
    const binary = join(home, 'connector-agent');
    await copyFile(build.binaryPath, binary);
    // The build's work folder goes with it: only what it made is left in --out-dir.
    expect(await readdir(outDir)).not.toContain('.sea-build');
    // The whole line, anchored at both ends: the version built in, an ISO build time, a commit hash
    // (or `unknown` outside a git checkout, in its place only), and this node and platform.
    const expected = new RegExp(
      `^connector-agent ${escapeRegExp(pkg.version)} \\(built \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z, ` +
        `commit (?:[0-9a-f]{7,}|unknown), node ${escapeRegExp(process.versions.node)}, ${process.platform}-${process.arch}\\)\\n$`,
    );
    for (const args of [['version'], ['--version']]) {
      const proc = spawnProcess(binary, args, { cwd: home, env: { PATH: '/nonexistent' } });
      expect((await proc.exited).code).toBe(0);
      expect(proc.output()).toMatch(expected);
    }
    await rm(home, { recursive: true, force: true });
  });

  it('enrolls, connects, reports host facts, is revoked, exits 4 and leaves no identity behind', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Binary' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const home = await tempDir('ce-bin-');
    const binary = join(home, 'connector-agent');
    await copyFile(build.binaryPath, binary);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(home, 'provisioning.key'), `${key}\n`, { mode: 0o600 });
    const stateDir = join(home, 'state');
    const agent = spawnBinary(
      binary,
      ['--server', srv.url, '--key-file', join(home, 'provisioning.key'), '--name', 'sea'],
      stateDir,
      home,
    );
    const connector = await waitConnected(srv.admin, 'sea', 30_000);
    expect(await identityMode(stateDir)).toBe(0o600);
    const view = await eventually('host facts', async () => {
      const c = await srv.admin.connectors.get.query({ connectorId: connector.id });
      return c.host.cpus > 0 && c.host.ips.length > 0 ? c : null;
    });
    expect(view.host.platform).toBe('linux');
    // With no PATH, the system's description comes from /etc/os-release all the same.
    const release = osRelease();
    if (release)
      expect(view.host).toMatchObject({
        os: release.NAME,
        release: release.VERSION_ID ?? expect.any(String),
      });
    expect(view.agentVersion).toMatch(/^\d+\.\d+\.\d+/);
    await srv.admin.connectors.revoke.mutate({ connectorId: connector.id });
    expect((await agent.exited).code).toBe(4);
    expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
    expect((await readdir(stateDir)).filter((f) => f.includes('identity'))).toEqual([]);
    await rm(home, { recursive: true, force: true });
  });

  it('cross-builds linux-arm64 from the npm node binary and checks it as a valid aarch64 SEA executable', async () => {
    const arm = await buildAgent({ outDir, target: 'linux-arm64', log: () => {} });
    expect(arm.cross).toBe(true);
    expect(arm.binaryPath.endsWith('connector-agent-linux-arm64')).toBe(true);
    const { readFile } = await import('node:fs/promises');
    const head = (await readFile(arm.binaryPath)).subarray(0, 20);
    expect(head.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(head.readUInt16LE(18)).toBe(0xb7); // EM_AARCH64
    expect(arm.checks.length).toBeGreaterThan(0);
  }, 300_000);
});
