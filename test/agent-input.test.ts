import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnAgent } from './helpers/agents.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** What an agent can tell is wrong before it sends anything: a usage error (exit 2), no key spent. */
describe('agent input it checks itself', () => {
  it('a --name the server would refuse, and an admin key given as the provisioning key: exit 2, nothing sent, no key echoed', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Checked' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;

    const long = spawnAgent(
      ['--server', srv.url, '--key', key, '--name', 'x'.repeat(300)],
      await tempDir('ce-in-'),
    );
    expect((await long.exited).code).toBe(2);
    expect(long.output()).toMatch(/--name: .*64/);
    const control = spawnAgent(
      ['--server', srv.url, '--key', key, '--name', 'bad\nname'],
      await tempDir('ce-in-'),
    );
    expect((await control.exited).code).toBe(2);
    expect(control.output()).toMatch(/--name: .*U\+000A/);

    const adminKey = (await readFile(join(srv.dataDir, 'admin.key'), 'utf8')).trim();
    const wrongKind = spawnAgent(['--server', srv.url, '--key', adminKey], await tempDir('ce-in-'));
    expect((await wrongKind.exited).code).toBe(2);
    expect(wrongKind.output()).toContain('the key given is an admin API key (cak_…), not a group');
    expect(wrongKind.output()).not.toContain(adminKey);

    // None of them reached the server.
    expect(await srv.admin.audit.list.query({ type: 'enrollment' })).toEqual([]);
    expect((await srv.admin.connectors.list.query({})).items).toEqual([]);
  });
});
