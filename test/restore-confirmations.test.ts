import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectSim, type Enrolled, enrollSim } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { serverCli } from './helpers/cli.js';
import { startTestServer, type TestServer, tempDir } from './helpers/server.js';

/** The server CLI as an operator runs it. */
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  serverCli(args, { CONNECTOR_ADMIN_KEY: '', ...env });

/** A revoked host connecting again: refused, which confirms its revocation. */
async function hostHears(srv: TestServer, enrolled: Enrolled): Promise<void> {
  const sim = connectSim(srv.url, enrolled);
  try {
    expect((await sim.waitForClose()).reason).toBe('CONNECTOR_REVOKED');
  } finally {
    await sim.close();
  }
  await eventually('confirmed and audited', async () => {
    const events = await srv.admin.audit.list.query({ type: 'connector.revocation_confirmed' });
    return events.some((e) => e.connectorId === enrolled.connectorId);
  });
}

describe('restore replays revocations confirmed after the backup', () => {
  it('a revocation its host confirmed after the backup reads confirmed once restored, and again from the restored dir’s log', async () => {
    const work = await tempDir('ce-restore-confirmed-');
    const srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Confirmed' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const before = (await enrollSim(srv.url, key, 'revoked-before')).enrolled!;
    const after = (await enrollSim(srv.url, key, 'revoked-after')).enrolled!;
    // Revoked before the backup, its host offline: pending in the backup.
    await srv.admin.connectors.revoke.mutate({ connectorId: before.connectorId });
    const out = join(work, 'before.backup');
    const backup = await cli(['backup', '--out', out, '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: srv.adminKey,
    });
    expect(backup.code, backup.stderr).toBe(0);
    await srv.clock.advance(1000);
    await hostHears(srv, before);
    // Revoked and confirmed after the backup: both replayed.
    await srv.admin.connectors.revoke.mutate({ connectorId: after.connectorId });
    await srv.clock.advance(1000);
    await hostHears(srv, after);
    const shown = async (s: TestServer, connectorId: string) =>
      (await s.admin.connectors.get.query({ connectorId })).termination;
    const original = {
      before: await shown(srv, before.connectorId),
      after: await shown(srv, after.connectorId),
    };
    expect(original.before).toMatchObject({ state: 'confirmed', confirmedFrom: '127.0.0.1' });
    expect(original.after).toMatchObject({ state: 'confirmed', confirmedFrom: '127.0.0.1' });
    await srv.stop();

    const first = join(work, 'first');
    const once = await cli([
      'restore',
      '--from',
      out,
      '--data-dir',
      first,
      '--audit-file',
      join(srv.dataDir, 'audit.jsonl'),
    ]);
    expect(once.code, once.stderr).toBe(0);
    expect(once.stdout).toContain('2 revocation(s) confirmed by their host');
    // The first server's log is gone (another machine); the restored dir's log is what is left.
    const second = join(work, 'second');
    const twice = await cli([
      'restore',
      '--from',
      out,
      '--data-dir',
      second,
      '--audit-file',
      join(first, 'audit.jsonl'),
    ]);
    expect(twice.code, twice.stderr).toBe(0);
    expect(twice.stdout).toContain('2 revocation(s) confirmed by their host');
    for (const dir of [first, second]) {
      await using moved = await startTestServer({ dataDir: dir });
      expect(await shown(moved, before.connectorId), dir).toEqual(original.before);
      expect(await shown(moved, after.connectorId), dir).toEqual(original.after);
      const listed = await cli(['connectors', 'list', '--server', moved.url, '--data-dir', dir]);
      expect(listed.stdout).not.toContain('revoked (pending)');
      expect(listed.stdout.match(/revoked \(confirmed\)/g)).toHaveLength(2);
    }
    await rm(srv.dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }, 120_000);
});
