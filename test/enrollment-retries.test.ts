import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { createAdminClient } from '../server/admin-client.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { canMount } from './helpers/mounts.js';
import { freePort, spawnServer } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

describe('an enrollment whose answer never reached the agent is not made twice', () => {
  it('the same key pair enrolled again gets the same connector and a fresh identity, with no second use of the key, even one limited to a single use', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Once', maxUses: 1 });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const keyPair = await generateAgentKeyPair();
    const first = await enrollSim(srv.url, key, 'retried', keyPair);
    const again = await enrollSim(srv.url, key, 'retried', keyPair);
    expect(first.ok && again.ok).toBe(true);
    expect(again.enrolled!.connectorId).toBe(first.enrolled!.connectorId);
    expect(again.enrolled!.identityToken).not.toBe(first.enrolled!.identityToken);
    const counted = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(counted).toMatchObject({ uses: 1, status: 'exhausted' });
    expect((await srv.admin.connectors.counts.query({})).total).toBe(1);
    // Another host is refused: the key's one use is spent.
    const other = await enrollSim(srv.url, key, 'other');
    expect(other.ok).toBe(false);
    expect(JSON.stringify(other)).toContain('KEY_EXHAUSTED');
    // The identity the retry got opens a session.
    const session = connectSim(srv.url, again.enrolled!);
    await session.waitFor('ready');
    await session.close();
    const succeeded = await srv.admin.audit.list.query({ type: 'enrollment.succeeded' });
    expect(succeeded.map((e) => e.details?.repeated ?? false).sort()).toEqual([false, true]);
  });

  it("repeated with someone else's public key (a holder of the group key) after a signing-key rotation, it changes nothing: the host's identity still counts against its signing key, which cannot be retired from under it", async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Victim' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const victimKeys = await generateAgentKeyPair();
    const victim = (await enrollSim(srv.url, key, 'victim', victimKeys)).enrolled!;
    const oldKid = (await srv.admin.signingKeys.list.query({})).find((k) => k.state === 'active')!.kid;
    const before = await srv.admin.connectors.get.query({ connectorId: victim.connectorId });
    await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    // The public key is no secret (every proof names it): enrolled again with it, by someone else.
    const repeat = await enrollSim(srv.url, key, 'victim', {
      publicJwk: victimKeys.publicJwk,
      privateJwk: (await generateAgentKeyPair()).privateJwk,
    });
    expect(repeat.enrolled?.connectorId).toBe(victim.connectorId);
    const after = await srv.admin.connectors.get.query({ connectorId: victim.connectorId });
    expect(after.identity).toEqual(before.identity);
    expect(after.identity?.keyId).toBe(oldKid);
    await expect(srv.admin.signingKeys.retire.mutate({ kid: oldKid })).rejects.toMatchObject({
      data: { reason: 'SIGNING_KEY_IN_USE' },
    });
    // And the host's own identity still opens a session.
    const session = connectSim(srv.url, victim);
    await session.waitFor('ready');
    await session.close();
  });

  it('a revoke ends it: the same key pair with the old key is refused (the key was regenerated)', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Revoked' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const keyPair = await generateAgentKeyPair();
    const first = await enrollSim(srv.url, key, 'gone', keyPair);
    await srv.admin.connectors.revoke.mutate({ connectorId: first.enrolled!.connectorId });
    const again = await enrollSim(srv.url, key, 'gone', keyPair);
    expect(again.ok).toBe(false);
    expect(JSON.stringify(again)).toContain('KEY_SUPERSEDED');
  });

  it('an enrollment cut off before its answer, then the group key regenerated: the agent given the new key enrolls with a new key pair, not KEY_INVALID for ever', async () => {
    const dataDir = await tempDir('ce-cut-enroll-');
    const server = await spawnServer(dataDir);
    const admin = createAdminClient({ url: server.url, adminKey: server.adminKey });
    const stateDir = await tempDir('ce-cut-agent-');
    try {
      const group = await admin.groups.create.mutate({ name: 'Cut off' });
      const oldKey = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      // The server holds the request unanswered; the agent dies waiting; then the server goes on.
      server.kill('SIGSTOP');
      const cut = spawnAgent(['--server', server.url, '--key', oldKey, '--name', 'cut'], stateDir);
      await eventually('the key pair saved', async () => existsSync(join(stateDir, 'enrollment-key.json')));
      await cut.waitForOutput(/enrolling with/);
      await new Promise((resolve) => setTimeout(resolve, 300)); // the request on its way
      cut.kill('SIGKILL');
      await cut.exited;
      server.kill('SIGCONT');
      const pending = await eventually('the enrollment made on the server', async () => {
        const { items } = await admin.connectors.list.query({});
        return items.length > 0 && items;
      });
      await admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
      const newKey = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const agent = spawnAgent(['--server', server.url, '--key', newKey, '--name', 'cut'], stateDir);
      try {
        const connector = await waitConnected(admin, 'cut');
        expect(connector.id).not.toBe(pending[0]!.id);
        expect(agent.output()).not.toContain('KEY_INVALID');
      } finally {
        agent.kill('SIGTERM');
        await agent.exited;
      }
    } finally {
      server.kill('SIGCONT');
      server.kill('SIGTERM');
      await server.exited;
      await rm(stateDir, { recursive: true, force: true });
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('a state dir that fills up between enrolling and saving: exit 1 saying so; once there is room, the next start gets the same connector, and the key is used once', async (ctx) => {
    if (!canMount()) return ctx.skip('needs root and mount (tmpfs)');
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Full', maxUses: 1 });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const stateDir = await tempDir('ce-full-state-');
    // Two pages: the agent's lock and its enrollment key fit, the identity does not.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8k,mode=0700', 'tmpfs', stateDir]);
    try {
      const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'cramped'], stateDir);
      expect((await agent.exited).code).toBe(1);
      expect(agent.output()).toMatch(
        /cannot write in the state dir .* \(ENOSPC: the disk is full\): enrolled as con_\w+, but its identity is not saved; the next start enrolls with the same key pair and gets the same connector/,
      );
      expect(agent.output()).not.toMatch(/\n\s+at /); // no stack trace
      // Its status file could not be written either: said once, not silently left stale.
      expect(agent.output().match(/status\.json is not updated/g)).toHaveLength(1);
      expect(await readdir(stateDir)).toContain('enrollment-key.json');
      const [made] = (await srv.admin.connectors.list.query({})).items;
      expect(made?.name).toBe('cramped');

      execFileSync('mount', ['-o', 'remount,size=256k', stateDir]);
      const rerun = spawnAgent(['--server', srv.url, '--key', key], stateDir);
      const connected = await waitConnected(srv.admin, 'cramped');
      expect(connected.id).toBe(made?.id);
      expect((await readIdentity(stateDir))?.connectorId).toBe(made?.id);
      expect((await srv.admin.connectors.counts.query({})).total).toBe(1);
      expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).uses).toBe(1);
      // Done with: the enrollment's key pair is in the identity now.
      expect(existsSync(join(stateDir, 'enrollment-key.json'))).toBe(false);
      rerun.kill('SIGTERM');
      expect((await rerun.exited).code).toBe(0);
    } finally {
      execFileSync('umount', [stateDir]);
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a state dir that cannot take even the key pair: exit 1 before anything is sent, so the key is not spent', async (ctx) => {
    if (!canMount()) return ctx.skip('needs root and mount (tmpfs)');
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Readonly', maxUses: 1 });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const stateDir = await tempDir('ce-ro-state-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700,ro', 'tmpfs', stateDir]);
    try {
      const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'frozen'], stateDir);
      expect((await agent.exited).code).toBe(1);
      expect(agent.output()).toMatch(
        /cannot write in the state dir .* \(EROFS: it is on a read-only file system\)/,
      );
      expect(agent.output()).not.toMatch(/\n\s+at /);
      expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).uses).toBe(0);
      expect((await srv.admin.connectors.counts.query({})).total).toBe(0);
    } finally {
      execFileSync('umount', [stateDir]);
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});

describe('an agent enrolling with a server that is not there', () => {
  it('says so once with a hint, then only at the 2nd, 4th, 8th… attempt (and every 15 min)', async () => {
    // A port just let go of: nothing listens there.
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const stateDir = await tempDir('ce-no-server-');
    const agent = spawnAgent(['--server', url, '--key', `cpk_${'a'.repeat(12)}_${'b'.repeat(43)}`], stateDir);
    try {
      await agent.waitForOutput(/still cannot enroll after 4 attempts; retrying[^\n]*failingFor=/, 30_000);
      const lines = agent.output().split('\n');
      const said = lines.filter((l) => /enrollment failed|still cannot enroll/.test(l));
      expect(said).toEqual([
        expect.stringContaining(
          `enrollment failed, retrying: is the server running, and reachable from this host at ${url}?`,
        ),
        expect.stringContaining('still cannot enroll after 2 attempts'),
        expect.stringContaining('still cannot enroll after 4 attempts'),
      ]);
      expect(said[0]).toContain(`reason=connect ECONNREFUSED 127.0.0.1:${port}`);
    } finally {
      agent.kill('SIGTERM');
      await agent.exited;
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
