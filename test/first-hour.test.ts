import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { spawnTs } from './helpers/processes.js';
import { rawCall, startTestServer, tempDir } from './helpers/server.js';

/** One line, no stack frame: what every CLI failure must look like. */
function expectOneLine(stderr: string) {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(stderr).not.toMatch(/\n\s+at /);
}

describe('the admin key an admin command uses', () => {
  it('takes --admin-key-file over CONNECTOR_ADMIN_KEY, as every flag beats the environment', async () => {
    await using srv = await startTestServer();
    const r = await serverCli(
      ['groups', 'list', '--server', srv.url, '--admin-key-file', srv.server.adminKeyFile],
      {
        CONNECTOR_ADMIN_KEY: WELL_SHAPED_UNKNOWN_KEY,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    // Without the flag the environment is used (and here it is wrong).
    const envOnly = await serverCli(['groups', 'list', '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: WELL_SHAPED_UNKNOWN_KEY,
    });
    expect(envOnly.code).toBe(1);
    expect(envOnly.stderr).toContain('ADMIN_KEY_INVALID');
  });

  it('names a missing --admin-key-file, and a directory passed as one, in one line (exit 2)', async () => {
    const dir = await tempDir('ce-keyfile-');
    const missing = join(dir, 'nonexistent.key');
    const r = await serverCli(['groups', 'list', '--admin-key-file', missing], { CONNECTOR_ADMIN_KEY: '' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--admin-key-file ${missing}: no such file`);
    expect(r.stderr).not.toContain('pass --admin-key-file');
    expectOneLine(r.stderr);

    const asDir = await serverCli(['groups', 'list', '--admin-key-file', dir], { CONNECTOR_ADMIN_KEY: '' });
    expect(asDir.code).toBe(2);
    expect(asDir.stderr).toContain(`--admin-key-file ${dir}: it is a directory`);
    expectOneLine(asDir.stderr);

    const empty = join(dir, 'empty.key');
    await writeFile(empty, '\n');
    const blank = await serverCli(['groups', 'list', '--admin-key-file', empty], { CONNECTOR_ADMIN_KEY: '' });
    expect(blank.code).toBe(2);
    expect(blank.stderr).toContain(`${empty} is empty`);
    expectOneLine(blank.stderr);

    // No flag, no env, a data dir without admin.key: says which file it looked for.
    const dataDir = join(dir, 'data');
    await mkdir(dataDir);
    const none = await serverCli(['groups', 'list', '--data-dir', dataDir], { CONNECTOR_ADMIN_KEY: '' });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain(`${join(dataDir, 'admin.key')} does not exist`);
    expectOneLine(none.stderr);
  });

  it('a key file or CONNECTOR_ADMIN_KEY holding more than the key is refused before anything is sent, and its text never printed', async () => {
    await using srv = await startTestServer();
    const dir = await tempDir('ce-keyfile-shape-');
    const key = srv.adminKey;
    const cases: Array<{ from: string[]; env?: string; says: string }> = [];
    const file = async (name: string, text: string) => {
      const path = join(dir, name);
      await writeFile(path, text, { mode: 0o600 });
      return path;
    };
    const commented = await file('commented.key', `# production admin key\n${key}\n`);
    cases.push({
      from: ['--admin-key-file', commented],
      says: `--admin-key-file ${commented} is not an admin API key`,
    });
    const two = await file('two.key', `${key}\n${key}\n`);
    cases.push({ from: ['--admin-key-file', two], says: 'it holds 2 lines' });
    const nul = await file('nul.key', `${key}\0`);
    cases.push({
      from: ['--admin-key-file', nul],
      says: 'is not one whole (a character missing, extra or changed)',
    });
    const provisioning = await file('provisioning.key', `cpk_${'a'.repeat(12)}_${'B'.repeat(43)}`);
    cases.push({ from: ['--admin-key-file', provisioning], says: 'it holds a provisioning key (cpk_…)' });
    cases.push({ from: ['--admin-key-file', '/dev/zero'], says: 'it holds more than 4096 bytes' });
    cases.push({
      from: [],
      env: `${key}\nx`,
      says: 'the admin key from CONNECTOR_ADMIN_KEY is not an admin API key',
    });
    const results = await Promise.all(
      cases.map((c) =>
        serverCli(['groups', 'list', '--server', srv.url, ...c.from], { CONNECTOR_ADMIN_KEY: c.env ?? '' }),
      ),
    );
    for (const [i, r] of results.entries()) {
      expect(r.code, cases[i]!.says).toBe(2);
      expect(r.stderr).toContain(cases[i]!.says);
      expect(r.stderr).toContain('nothing was sent');
      expect(r.stderr).not.toContain(key.slice(20));
      expectOneLine(r.stderr);
    }
    // Nothing reached the server: no failed admin call was counted.
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_admin_auth_failures_total 0$/m);
    await rm(dir, { recursive: true, force: true });
  });
});

/** An admin key of the right shape that no server made. */
const WELL_SHAPED_UNKNOWN_KEY = `cak_${'z'.repeat(12)}_${'A'.repeat(43)}`;

describe('asking for the status a connector or group already has', () => {
  it('changes nothing: no audit event, nothing pushed to the agent, and says so', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Twice' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const { enrolled } = await enrollSim(srv.url, key.key!, 'twice-host');
    const session = connectSim(srv.url, enrolled!);
    await session.waitFor('ready');

    const first = await srv.admin.connectors.disable.mutate({ connectorId: enrolled!.connectorId });
    expect(first).toMatchObject({ status: 'disabled', changed: true });
    await session.waitFor('status');
    const second = await srv.admin.connectors.disable.mutate({ connectorId: enrolled!.connectorId });
    expect(second).toMatchObject({ status: 'disabled', changed: false });
    const groupAgain = await srv.admin.groups.enable.mutate({ groupId: group.id });
    expect(groupAgain).toMatchObject({ status: 'enabled', changed: false });

    const audit = await srv.admin.audit.list.query({});
    expect(audit.filter((e) => e.type === 'connector.disabled')).toHaveLength(1);
    expect(audit.filter((e) => e.type === 'group.enabled')).toHaveLength(0);
    // The agent was told once. A later real change is the next thing it hears.
    await srv.admin.connectors.enable.mutate({ connectorId: enrolled!.connectorId });
    await session.waitFor('status');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(
      session.events.filter((e) => e.type === 'status').map((e) => e.type === 'status' && e.status),
    ).toEqual(['disabled', 'enabled']);

    const cli = await serverCli([
      'connectors',
      'enable',
      enrolled!.connectorId,
      '--server',
      srv.url,
      '--admin-key-file',
      srv.server.adminKeyFile,
    ]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain('was already enabled; nothing changed');
    await session.close();
  });
});

describe('last seen of a connected connector', () => {
  it('is now while it is connected, not its connect time', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Seen' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const { enrolled } = await enrollSim(srv.url, key.key!, 'seen-host');
    const session = connectSim(srv.url, enrolled!);
    await session.waitFor('ready');
    const connectedAt = srv.clock.now();
    srv.clock.advance(55_000);
    const c = await srv.admin.connectors.get.query({ connectorId: enrolled!.connectorId });
    expect(c.connection).toBe('connected');
    expect(Date.parse(c.lastConnectedAt!)).toBe(connectedAt);
    expect(Date.parse(c.lastSeenAt!)).toBe(srv.clock.now());
    const listed = await srv.admin.connectors.list.query({});
    expect(Date.parse(listed.items[0]!.lastSeenAt!)).toBe(srv.clock.now());

    await session.close();
    // Once gone, the last seen stays where the session ended.
    const endedAt = srv.clock.now();
    let after = await srv.admin.connectors.get.query({ connectorId: enrolled!.connectorId });
    for (let i = 0; i < 50 && after.connection === 'connected'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      after = await srv.admin.connectors.get.query({ connectorId: enrolled!.connectorId });
    }
    srv.clock.advance(60_000);
    after = await srv.admin.connectors.get.query({ connectorId: enrolled!.connectorId });
    expect(after.connection).toBe('disconnected');
    expect(Date.parse(after.lastSeenAt!)).toBe(endedAt);
  });
});

describe('a read-scoped admin key', () => {
  it("sees a provisioning key's details with the secret masked, never the secret", async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Masked' });
    const full = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(full.key).toMatch(/^cpk_/);
    const created = await srv.admin.apiKeys.create.mutate({ name: 'auditor', scope: 'read' });
    const reader = createAdminClient({ url: srv.url, adminKey: created.key });
    const seen = await reader.provisioningKeys.get.query({ groupId: group.id });
    expect(seen).toMatchObject({ keyId: full.keyId, status: 'active', key: null, expiresAt: full.expiresAt });
    expect(seen.keyMasked).toBe(`cpk_••••••••${full.key!.slice(-4)}`);
    expect(JSON.stringify(seen)).not.toContain(full.key!.slice(4, 20));
  });
});

describe('serve refuses a data dir it cannot use in one line, never a stack trace', () => {
  /** A data dir a server started in once, then damaged by `damage`. */
  async function damaged(damage: (dir: string) => Promise<void>): Promise<string> {
    const dir = await tempDir('ce-damaged-');
    const srv = await startTestServer({ dataDir: dir });
    await srv.stop();
    await damage(dir);
    return dir;
  }
  const serve = (dataDir: string) => serverCli(['serve', '--port', '0', '--data-dir', dataDir]);

  it('a file, a path under a file, a path the kernel refuses, and one under /proc (no spin)', async () => {
    const dir = await tempDir('ce-baddir-');
    const file = join(dir, 'a-file');
    await writeFile(file, 'x');
    const cases: Array<[string, string, number]> = [
      [file, `data dir ${file} is not a directory`, 2],
      [join(file, 'sub'), `${file} is not a directory, so ${join(file, 'sub')} cannot be made in it`, 2],
      // Node 20's recursive mkdir spun at 100 % CPU for ever here.
      ['/proc/forbidden/x', 'data dir /proc/forbidden/x cannot be created (ENOENT)', 2],
      ['/sys/connector-test', 'data dir /sys/connector-test cannot be created (EPERM)', 2],
    ];
    for (const [dataDir, words, code] of cases) {
      const r = await serve(dataDir);
      expect(r.code, `${dataDir}: ${r.stderr}`).toBe(code);
      expect(r.stderr).toContain(words);
      expectOneLine(r.stderr);
    }
  });

  it('a damaged secret.key or signing-keys.json, or a directory where the audit log belongs', async () => {
    const secret = await damaged((dir) => writeFile(join(dir, 'secret.key'), 'not base64 at all\n'));
    const keys = await damaged((dir) => writeFile(join(dir, 'signing-keys.json'), '{"keys":'));
    const audit = await damaged(async (dir) => {
      await rm(join(dir, 'audit.jsonl'));
      await mkdir(join(dir, 'audit.jsonl'));
    });
    const cases: Array<[string, string]> = [
      [secret, `${join(secret, 'secret.key')}: is damaged`],
      [keys, `${join(keys, 'signing-keys.json')}: the signing key file cannot be read or parsed`],
      [audit, `${join(audit, 'audit.jsonl')}: is a directory where a file belongs (EISDIR)`],
    ];
    for (const [dataDir, words] of cases) {
      const r = await serve(dataDir);
      expect(r.code, r.stderr).not.toBe(0);
      expect(r.stderr).toContain(`cannot start: ${words}`);
      expectOneLine(r.stderr);
    }
  });
});

describe('deleting admin API keys', () => {
  it('refuses the key making the call without --force (so the last admin key stays); a restart lets the admin back in', async () => {
    const dataDir = await tempDir('ce-lastkey-');
    let srv = await startTestServer({ dataDir });
    const [bootstrap] = await srv.admin.apiKeys.list.query({});
    const reader = await srv.admin.apiKeys.create.mutate({ name: 'reader', scope: 'read' });
    // The caller's own key: only admin keys may delete, so this is what keeps the last one.
    const own = await rawCall(srv.url, 'apiKeys.delete', { id: bootstrap!.id }, { key: srv.adminKey });
    expect(own).toMatchObject({ ok: false, status: 412, reason: 'API_KEY_IN_USE' });
    const second = await srv.admin.apiKeys.create.mutate({ name: 'second', scope: 'admin' });
    const viaSecond = createAdminClient({ url: srv.url, adminKey: second.key });
    await viaSecond.apiKeys.delete.mutate({ id: bootstrap!.id });
    // The data dir's admin.key still holds the bootstrap key: the CLI says which key it sent.
    const stale = await serverCli(['groups', 'list', '--server', srv.url, '--data-dir', dataDir], {
      CONNECTOR_ADMIN_KEY: '',
    });
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain(
      `the key sent came from ${join(dataDir, 'admin.key')} (id ${bootstrap!.id}): if it was deleted or expired (api-keys list), put a current admin key there`,
    );
    const byReader = await rawCall(srv.url, 'apiKeys.delete', { id: second.id }, { key: reader.key });
    expect(byReader).toMatchObject({ ok: false, reason: 'SCOPE_FORBIDDEN' });
    const cli = await serverCli(['api-keys', 'delete', second.id, '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: second.key,
    });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('API_KEY_IN_USE');
    expect((await viaSecond.apiKeys.list.query({})).map((k) => k.id)).toContain(second.id);

    // With --force it goes; nobody can manage the server until a restart writes a bootstrap key.
    const forced = await serverCli(['api-keys', 'delete', second.id, '--force', '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: second.key,
    });
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout.trim()).toBe(`API key ${second.id} deleted.`);
    expect(await rawCall(srv.url, 'groups.list', {}, { key: second.key })).toMatchObject({ status: 401 });
    await srv.stop();
    srv = await startTestServer({ dataDir });
    expect(srv.adminKey).not.toBe(second.key);
    expect(await srv.admin.groups.list.query({})).toEqual([]);
    const audit = await srv.admin.audit.list.query({ type: 'api_key' });
    expect(audit.filter((e) => e.type === 'api_key.bootstrapped')).toHaveLength(2);
    expect(audit.filter((e) => e.type === 'api_key.deleted').map((e) => e.details)).toEqual([
      { force: true },
      { force: false },
    ]);
    await srv[Symbol.asyncDispose]();
  });
});

describe('admin.key lost while admin keys still exist', () => {
  it('a restart alone writes none (keys exist); serve --new-admin-key writes one, audited as a security event, and only at that start', async () => {
    const dataDir = await tempDir('ce-lost-admin-key-');
    const first = await startTestServer({ dataDir });
    await first.admin.groups.create.mutate({ name: 'Still here' });
    await first.stop();
    await rm(join(dataDir, 'admin.key'));

    const plain = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    await plain.waitForOutput(/listening on/);
    expect(plain.output()).toContain('no admin key file here');
    plain.kill('SIGTERM');
    await plain.exited;
    expect(existsSync(join(dataDir, 'admin.key'))).toBe(false);

    const asked = spawnTs('server/main.ts', [
      'serve',
      '--data-dir',
      dataDir,
      '--port',
      '0',
      '--new-admin-key',
    ]);
    await asked.waitForOutput(/listening on/);
    expect(asked.output()).toContain('a new admin key was written, as --new-admin-key asked');
    const url = /listening on (http:\/\/[^;\s]+)/.exec(asked.output())![1]!;
    const key = (await readFile(join(dataDir, 'admin.key'), 'utf8')).trim();
    const admin = createAdminClient({ url, adminKey: key });
    expect((await admin.groups.list.query({})).map((g) => g.name)).toEqual(['Still here']);
    const minted = (await admin.audit.list.query({ type: 'api_key.bootstrapped' }))[0]!;
    expect(minted).toMatchObject({ security: true, details: { requested: '--new-admin-key' } });
    expect(String(minted.details.name)).toMatch(/^recovery-\d{4}-\d\d-\d\dT\d{6}$/);
    asked.kill('SIGTERM');
    await asked.exited;

    // The next start without the flag makes no other.
    const again = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    await again.waitForOutput(/listening on/);
    again.kill('SIGTERM');
    await again.exited;
    expect((await readFile(join(dataDir, 'admin.key'), 'utf8')).trim()).toBe(key);
    await rm(dataDir, { recursive: true, force: true });
  });
});

describe('deleting a group from the CLI', () => {
  it('refuses one with connectors in two lines (reason, then fix); --force says what went with it', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Doomed' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    await enrollSim(srv.url, key, 'doomed-1');
    const env = { CONNECTOR_ADMIN_KEY: srv.adminKey };
    const refused = await serverCli(['groups', 'delete', 'Doomed', '--server', srv.url], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toEqual([
      'error: GROUP_NOT_EMPTY: The group still has 1 connector(s).',
      expect.stringMatching(/^ {2}fix: Delete its connectors first, or pass --force/),
    ]);
    const forced = await serverCli(['groups', 'delete', 'Doomed', '--force', '--server', srv.url], env);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout.trim()).toBe(`Group Doomed (${group.id}) deleted, with its 1 connector(s).`);
  });
});

describe('usage errors and --json errors', () => {
  it('exit 2 for a bad flag value, whether commander, the CLI or the server finds it; JSON on stderr with --json', async () => {
    await using srv = await startTestServer();
    const common = ['--server', srv.url, '--admin-key-file', srv.server.adminKeyFile];
    const cases: Array<[string[], string]> = [
      [['connectors', 'list', '--status', 'foo'], "argument 'foo' is invalid"],
      [['connectors', 'list', '--limit', 'lots'], '--limit: "lots" is not a whole number'],
      [['audit', '--limit', '0'], '--limit: "0" is not a whole number from 1 to 10000'],
      [['api-keys', 'create', 'x', '--expires-in', 'soon'], '--expires-in: "soon" is not a duration'],
      // Not a duration at all: the examples are ones this flag takes (not 90s or 15m, refused next).
      [
        ['api-keys', 'create', 'x', '--expires-in', '2w'],
        '--expires-in: "2w" is not a duration: API keys last whole days, 1d to 3650d (e.g. 1d, 30d, 720h)',
      ],
      // Whole days only: 2s was made a key that lived a day, 25h one of two.
      [
        ['api-keys', 'create', 'x', '--expires-in', '2s'],
        '--expires-in: API keys last whole days, 1d to 3650d: 2s is not',
      ],
      [['api-keys', 'create', 'x', '--expires-in', '25h'], 'API keys last whole days'],
      [['api-keys', 'create', 'x', '--scope', 'root'], "argument 'root' is invalid"],
      [
        ['groups', 'create', 'x', '--max-uses', '0'],
        '--max-uses: "0" is not a whole number from 1 to 1000000',
      ],
      [['groups', 'regenerate-key', 'x', '--ttl', '400d'], '--ttl: must be between 1s and 365d'],
      [['signing-keys', 'rotate', '--activate-in', 'soon'], '--activate-in: "soon" is not a duration'],
      // The server's own validation (a group name too long) is the caller's to fix too.
      [['groups', 'create', 'x'.repeat(300)], 'VALIDATION_FAILED'],
    ];
    for (const [args, words] of cases) {
      const plain = await serverCli([...args, ...common]);
      expect(plain.code, `${args.join(' ')}: ${plain.stderr}`).toBe(2);
      expect(plain.stderr).toContain(words);
      const json = await serverCli([...args, ...common, '--json']);
      expect(json.code).toBe(2);
      expect(json.stdout).toBe('');
      const parsed = JSON.parse(json.stderr) as { error: { message: string; exitCode: number } };
      expect(parsed.error.exitCode).toBe(2);
      expect(JSON.stringify(parsed.error)).toContain(words.replaceAll('"', '\\"'));
    }
    // The server's validation tells a CLI user what to do, not to read error.data.issues.
    const empty = await serverCli(['groups', 'create', '', ...common]);
    expect(empty.stderr).toContain(
      "VALIDATION_FAILED: Invalid input: name: must not be empty\n  fix: give the value named above as the command's --help says",
    );
    expect(empty.stderr).not.toContain('error.data');
    // An API refusal with --json carries its reason and fix.
    const missing = await serverCli(['groups', 'get', 'grp_doesnotexist0', ...common, '--json']);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stderr).error).toMatchObject({ reason: 'GROUP_NOT_FOUND', exitCode: 1 });
  });
});

describe('revoking twice, and connectors by name', () => {
  it('a second revoke changes nothing (no new key, no audit) and says when it was revoked', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Again' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const { enrolled } = await enrollSim(srv.url, key.key!, 'again-host');
    const first = await srv.admin.connectors.revoke.mutate({ connectorId: enrolled!.connectorId });
    expect(first.changed).toBe(true);
    const keyAfterFirst = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(keyAfterFirst.keyId).not.toBe(key.keyId);
    const second = await srv.admin.connectors.revoke.mutate({ connectorId: enrolled!.connectorId });
    expect(second).toMatchObject({ changed: false, status: 'revoked', revokedAt: first.revokedAt });
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).keyId).toBe(
      keyAfterFirst.keyId,
    );
    expect(await srv.admin.audit.list.query({ type: 'connector.revoked' })).toHaveLength(1);

    const cli = await serverCli([
      'connectors',
      'revoke',
      'again-host',
      '--server',
      srv.url,
      '--admin-key-file',
      srv.server.adminKeyFile,
    ]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`was already revoked at ${first.revokedAt}; nothing changed (no new key)`);
    expect(cli.stdout).not.toContain('regenerated');
  });

  it('connectors commands take a unique name, refuse a shared one with the ids, and tables show group names', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Named Group' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const solo = (await enrollSim(srv.url, key.key!, 'solo')).enrolled!;
    const twinA = (await enrollSim(srv.url, key.key!, 'twin')).enrolled!;
    const twinB = (await enrollSim(srv.url, key.key!, 'twin')).enrolled!;
    const common = ['--server', srv.url, '--admin-key-file', srv.server.adminKeyFile];

    const disabled = await serverCli(['connectors', 'disable', 'solo', ...common]);
    expect(disabled.code, disabled.stderr).toBe(0);
    expect((await srv.admin.connectors.get.query({ connectorId: solo.connectorId })).status).toBe('disabled');

    const shared = await serverCli(['connectors', 'delete', 'twin', ...common]);
    expect(shared.code).toBe(2);
    expect(shared.stderr).toContain('2 connectors are named "twin"');
    expect(shared.stderr).toContain(twinA.connectorId);
    expect(shared.stderr).toContain(twinB.connectorId);
    expect((await srv.admin.connectors.counts.query({})).total).toBe(3);

    const unknown = await serverCli(['connectors', 'get', 'nobody', ...common]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('CONNECTOR_NOT_FOUND');

    const list = await serverCli(['connectors', 'list', ...common]);
    expect(list.stdout).toContain('Named Group');
    expect(list.stdout).not.toContain(group.id);
  });
});

describe('serve on a port in use', () => {
  it('fails in one line before it makes the data dir, its files or a bootstrap key', async () => {
    await using srv = await startTestServer();
    const dataDir = join(await tempDir('ce-port-'), 'never-made');
    const r = await serverCli(['serve', '--port', String(srv.server.port), '--data-dir', dataDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`127.0.0.1:${srv.server.port} is already in use`);
    expectOneLine(r.stderr);
    await expect(stat(dataDir)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('started twice (same port, same data dir): says a server already runs there, not to pick another port', async () => {
    await using srv = await startTestServer();
    const r = await serverCli(['serve', '--port', String(srv.server.port), '--data-dir', srv.dataDir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `cannot start: a server already runs on this data dir (pid ${process.pid}), and 127.0.0.1:${srv.server.port} is in use`,
    );
    expect(r.stderr).not.toContain('--port to choose another');
    expectOneLine(r.stderr);
    // The running server kept its lock: a third start is refused the same way.
    expect(
      (await serverCli(['serve', '--port', String(srv.server.port), '--data-dir', srv.dataDir])).code,
    ).toBe(2);
  });
});

describe('near misses', () => {
  it('a group named with another case or a typo, and an audit type no event has, say what they may have meant', async () => {
    await using srv = await startTestServer();
    await srv.admin.groups.create.mutate({ name: 'Prod-EU' });
    await srv.admin.groups.create.mutate({ name: 'staging' });
    const common = ['--server', srv.url, '--admin-key-file', srv.server.adminKeyFile];

    const cased = await serverCli(['groups', 'get', 'prod-eu', ...common]);
    expect(cased.code).toBe(1);
    expect(cased.stderr).toContain(
      'GROUP_NOT_FOUND: no group with id or name "prod-eu"; did you mean "Prod-EU"?',
    );
    const typo = await serverCli(['connectors', 'list', '--group', 'stagin', ...common]);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('did you mean "staging"?');
    const nothingLike = await serverCli(['groups', 'get', 'payments', ...common]);
    expect(nothingLike.stderr).toContain(
      'no group with id or name "payments"; names are exact, case included',
    );
    expect(nothingLike.stderr).not.toContain('did you mean');

    // "No events." alone would hide the typo (enrollment is spelt with two l's).
    const audit = await serverCli(['audit', '--type', 'enrolment', ...common]);
    expect(audit.code).toBe(0);
    expect(audit.stdout.trim()).toBe('No events.');
    expect(audit.stderr).toContain(
      'no audit event type is "enrolment" or starts with "enrolment."; did you mean "enrollment"?',
    );
    expect(audit.stderr).toContain('(the types start with group, provisioning_key, enrollment,');
    // A type or prefix that exists but has no events yet is just "No events.".
    const none = await serverCli(['audit', '--type', 'backup', ...common]);
    expect(none.stdout.trim()).toBe('No events.');
    expect(none.stderr).toBe('');
    const some = await serverCli(['audit', '--type', 'group', ...common]);
    expect(some.stdout).toContain('group.created');
  });
});
