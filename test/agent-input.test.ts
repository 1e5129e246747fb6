import { chmod, readFile, writeFile } from 'node:fs/promises';
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

  it('a key given where other users can read it (--key on the command line, a key file open to them) is said when enrolling, never the key itself', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Exposed' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const onArgv = spawnAgent(['--server', srv.url, '--key', key, '--name', 'argv'], await tempDir('ce-in-'));
    await onArgv.waitForOutput(/enrolled; identity saved/);
    expect(onArgv.output()).toContain('--key puts the provisioning key on the command line');
    expect(onArgv.output()).not.toContain(key);
    onArgv.kill('SIGTERM');
    await onArgv.exited;

    const dir = await tempDir('ce-in-');
    const keyFile = join(dir, 'provisioning.key');
    await writeFile(keyFile, `${key}\n`, { mode: 0o644 });
    await chmod(keyFile, 0o644);
    const fromFile = spawnAgent(
      ['--server', srv.url, '--key-file', keyFile, '--name', 'file'],
      await tempDir('ce-in-'),
    );
    await fromFile.waitForOutput(/enrolled; identity saved/);
    expect(fromFile.output()).toContain(
      `--key-file ${keyFile} is readable by other users (mode 0644): chmod 600 it`,
    );
    expect(fromFile.output()).not.toContain(key);
    fromFile.kill('SIGTERM');
    await fromFile.exited;
  });
});
