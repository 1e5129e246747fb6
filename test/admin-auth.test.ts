import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { DAY_MS } from '../shared/durations.js';
import { rawCall, startTestServer } from './helpers/server.js';

describe('admin API keys', () => {
  it('writes a bootstrap admin key to <data-dir>/admin.key with mode 0600 on first start only', async () => {
    await using srv = await startTestServer();
    expect((await stat(srv.server.adminKeyFile)).mode & 0o777).toBe(0o600);
    expect((await stat(srv.dataDir)).mode & 0o777).toBe(0o700);
    expect(srv.adminKey).toMatch(/^cak_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    await srv.stop();
    await using again = await startTestServer({ dataDir: srv.dataDir });
    expect(again.adminKey).toBe(srv.adminKey);
    expect((await again.admin.apiKeys.list.query({})).filter((k) => k.kind === 'admin')).toHaveLength(1);
  });

  it('locked out, a restart writes a new bootstrap key and keeps the old admin.key aside, never overwritten', async () => {
    await using srv = await startTestServer();
    const [only] = (await srv.admin.apiKeys.list.query({})).filter((k) => k.kind === 'admin');
    await srv.admin.apiKeys.delete.mutate({ id: only!.id, force: true });
    await srv.stop();
    await using again = await startTestServer({ dataDir: srv.dataDir });
    expect(again.adminKey).not.toBe(srv.adminKey);
    expect(await again.admin.apiKeys.list.query({})).toHaveLength(1);
    const aside = (await readdir(srv.dataDir)).filter((name) => name.startsWith('admin.key.replaced-'));
    expect(aside).toEqual([
      expect.stringMatching(/^admin\.key\.replaced-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}Z$/),
    ]);
    const kept = join(srv.dataDir, aside[0]!);
    expect((await readFile(kept, 'utf8')).trim()).toBe(srv.adminKey);
    expect((await stat(kept)).mode & 0o777).toBe(0o600);
  });

  it('refuses a missing, malformed or wrong admin key with 401 ADMIN_KEY_INVALID', async () => {
    await using srv = await startTestServer();
    const wrongSecret = `${srv.adminKey.slice(0, -3)}xyz`;
    for (const key of [undefined, 'nope', wrongSecret, 'x'.repeat(5000)]) {
      const r = await rawCall(srv.url, 'groups.list', {}, key ? { key } : {});
      expect(r, String(key).slice(0, 20)).toMatchObject({
        ok: false,
        status: 401,
        reason: 'ADMIN_KEY_INVALID',
      });
    }
    const mutation = await rawCall(srv.url, 'groups.create', { name: 'x' }, {});
    expect(mutation).toMatchObject({ status: 401, reason: 'ADMIN_KEY_INVALID' });
    expect(await srv.admin.groups.list.query({})).toEqual([]);
  });

  it('creates keys shown once, with a scope: a read key may query but not mutate (SCOPE_FORBIDDEN)', async () => {
    await using srv = await startTestServer();
    const created = await srv.admin.apiKeys.create.mutate({ name: 'dashboard', scope: 'read' });
    expect(created.key).toMatch(/^cak_/);
    const listed = (await srv.admin.apiKeys.list.query({})).find((k) => k.id === created.id);
    expect(listed).toMatchObject({ name: 'dashboard', kind: 'admin', scope: 'read', lastUsedAt: null });
    expect(JSON.stringify(await srv.admin.apiKeys.list.query({}))).not.toContain(created.key);
    const reader = createAdminClient({ url: srv.url, adminKey: created.key });
    expect(await reader.groups.list.query({})).toEqual([]);
    const refused = await rawCall(srv.url, 'groups.create', { name: 'NotAllowed' }, { key: created.key });
    expect(refused).toMatchObject({ ok: false, status: 403, reason: 'SCOPE_FORBIDDEN' });
    expect(await srv.admin.groups.list.query({})).toEqual([]);
    const used = (await srv.admin.apiKeys.list.query({})).find((k) => k.id === created.id);
    expect(used?.lastUsedAt).toBe(new Date(srv.clock.now()).toISOString());
    const audit = await srv.admin.audit.list.query({ type: 'admin.refused' });
    expect(audit[0]).toMatchObject({
      reason: 'SCOPE_FORBIDDEN',
      actor: { kind: 'admin', apiKeyId: created.id },
    });
  });

  it('expires keys created with expiresInDays', async () => {
    await using srv = await startTestServer();
    const created = await srv.admin.apiKeys.create.mutate({ name: 'temp', scope: 'admin', expiresInDays: 1 });
    expect((await rawCall(srv.url, 'groups.list', {}, { key: created.key })).ok).toBe(true);
    srv.clock.advance(DAY_MS);
    expect(await rawCall(srv.url, 'groups.list', {}, { key: created.key })).toMatchObject({
      status: 401,
      reason: 'ADMIN_KEY_INVALID',
    });
  });

  it('deletes admin keys, which then stop working; unknown ids answer API_KEY_NOT_FOUND', async () => {
    await using srv = await startTestServer();
    const created = await srv.admin.apiKeys.create.mutate({ name: 'ci', scope: 'admin' });
    expect(await srv.admin.apiKeys.delete.mutate({ id: created.id })).toEqual({ deleted: true });
    expect(await rawCall(srv.url, 'groups.list', {}, { key: created.key })).toMatchObject({ status: 401 });
    expect(await rawCall(srv.url, 'apiKeys.delete', { id: created.id }, { key: srv.adminKey })).toMatchObject(
      {
        status: 404,
        reason: 'API_KEY_NOT_FOUND',
      },
    );
  });

  it('rejects a provisioning key used as an admin key', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'G' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(await rawCall(srv.url, 'groups.list', {}, { key: key.key! })).toMatchObject({
      status: 401,
      reason: 'ADMIN_KEY_INVALID',
    });
  });
});
