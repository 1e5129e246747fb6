import { describe, expect, it } from 'vitest';
import { DAY_MS } from '../shared/durations.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { rawCall, startTestServer } from './helpers/server.js';

describe('what the admin console reads without fetching every connector', () => {
  it('groups.list carries each group’s counts and its current key’s expiry, status and uses', async () => {
    await using srv = await startTestServer();
    const lab = await srv.admin.groups.create.mutate({ name: 'Lab', maxUses: 3, ttl: '2d' });
    expect(lab.currentKey).toMatchObject({ status: 'active', uses: 0, maxUses: 3 });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: lab.id })).key!;
    const enrolled = (await enrollSim(srv.url, key, 'lab-0')).enrolled!;
    await enrollSim(srv.url, key, 'lab-1');
    const session = connectSim(srv.url, enrolled);
    await session.waitFor('ready');
    const [listed] = await srv.admin.groups.list.query({});
    expect(listed).toMatchObject({
      id: lab.id,
      counts: { total: 2, connected: 1, neverConnected: 1 },
      currentKey: {
        id: lab.currentKey!.id,
        expiresAt: new Date(srv.clock.now() + 2 * DAY_MS).toISOString(),
        status: 'active',
        uses: 2,
        maxUses: 3,
      },
    });
    expect(JSON.stringify(listed)).not.toContain(key);
    srv.clock.advance(3 * DAY_MS);
    expect((await srv.admin.groups.get.query({ groupId: lab.id })).currentKey?.status).toBe('expired');
    await session.close();
  });

  it('connectors.list finds connectors by name, hostname or id, case-insensitively, with the other filters', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Search' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const web = (await enrollSim(srv.url, key, 'Web-Frontend')).enrolled!;
    const db = (await enrollSim(srv.url, key, 'db-primary')).enrolled!;
    const ids = async (input: Parameters<typeof srv.admin.connectors.list.query>[0]) =>
      (await srv.admin.connectors.list.query(input)).items.map((c) => c.id);
    expect(await ids({ search: 'frontEND' })).toEqual([web.connectorId]);
    expect(await ids({ search: db.connectorId.slice(-8) })).toEqual([db.connectorId]);
    expect(await ids({ search: 'nothing-like-it' })).toEqual([]);
    expect(await ids({ search: 'primary', status: 'disabled' })).toEqual([]);
    const bad = await rawCall(srv.url, 'connectors.list', { search: '' }, { key: srv.adminKey });
    expect(bad.reason).toBe('VALIDATION_FAILED');
  });

  it('audit.list filters on the security flag', async () => {
    await using srv = await startTestServer();
    await srv.admin.groups.create.mutate({ name: 'Plain' });
    const refused = await rawCall(srv.url, 'groups.list', {}, { key: 'cak_made_up' });
    expect(refused.reason).toBe('ADMIN_KEY_INVALID');
    const security = await srv.admin.audit.list.query({ security: true });
    expect(security.map((e) => e.type)).toEqual(['admin.refused']);
    expect(security.every((e) => e.security)).toBe(true);
    const others = await srv.admin.audit.list.query({ security: false });
    expect(others.map((e) => e.type)).toContain('group.created');
    expect(others.some((e) => e.security)).toBe(false);
  });

  it('the CLI takes the same filters: connectors list --search, audit --security', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Cli' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const web = (await enrollSim(srv.url, key, 'web-1')).enrolled!;
    await enrollSim(srv.url, key, 'db-1');
    await rawCall(srv.url, 'groups.list', {}, { key: 'cak_made_up' });
    const env = { CONNECTOR_ADMIN_KEY: srv.adminKey };
    const listed = await serverCli(
      ['connectors', 'list', '--server', srv.url, '--search', 'WEB', '--json'],
      env,
    );
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).items.map((c: { id: string }) => c.id)).toEqual([web.connectorId]);
    // A page that is not the last names the next one with the same filters: run as printed (the
    // first word dropped), it continues this listing; a bare --cursor listed every connector.
    await enrollSim(srv.url, key, 'web-2');
    await enrollSim(srv.url, key, 'web-3');
    const first = await serverCli(
      ['connectors', 'list', '--server', srv.url, '--search', 'web', '--limit', '2'],
      env,
    );
    const more = /^More: (connectors list --cursor \S+ .*)$/m.exec(first.stdout)?.[1];
    expect(more).toContain(`--search web --limit 2 --server ${srv.url}`);
    const next = await serverCli(more!.split(' '), env);
    expect(next.code, next.stderr).toBe(0);
    const named = (out: string) => [...out.matchAll(/\b(web-\d|db-1)\b/g)].map((m) => m[1]);
    expect([...named(first.stdout), ...named(next.stdout)].sort()).toEqual(['web-1', 'web-2', 'web-3']);
    expect(next.stdout).not.toContain('More:');
    const audit = await serverCli(['audit', '--server', srv.url, '--security', '--json'], env);
    expect(audit.code).toBe(0);
    expect(JSON.parse(audit.stdout).map((e: { type: string }) => e.type)).toEqual(['admin.refused']);
  });
});
