import { describe, expect, it } from 'vitest';
import { DAY_MS } from '../shared/durations.js';
import { enrollSim } from './helpers/agent-sim.js';
import { rawCall, startTestServer } from './helpers/server.js';

async function groupWithKey(srv: Awaited<ReturnType<typeof startTestServer>>, name: string) {
  const group = await srv.admin.groups.create.mutate({ name });
  const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
  return { group, key };
}

describe('groups and provisioning keys', () => {
  it('creates each group with an active key that expires key-ttl after creation (behaviour 1)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Lab');
    expect(group).toMatchObject({ name: 'Lab', status: 'enabled', description: '' });
    expect(key.status).toBe('active');
    expect(key.key).toMatch(/^cpk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    expect(key.name).toBe('Connector Provisioning Key - Lab');
    expect(Date.parse(key.expiresAt) - Date.parse(key.createdAt)).toBe(14 * DAY_MS);
    expect(key.createdAt).toBe(group.createdAt);
  });

  it('honours a custom key-ttl', async () => {
    await using srv = await startTestServer({ config: { keyTtlMs: 90_000 } });
    const { key } = await groupWithKey(srv, 'Short');
    expect(Date.parse(key.expiresAt) - Date.parse(key.createdAt)).toBe(90_000);
  });

  it('lets a current key enroll any number of connectors (behaviour 2)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Many');
    for (let i = 0; i < 5; i++) {
      const r = await enrollSim(srv.url, key.key!, `host-${i}`);
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      expect(r.enrolled?.groupId).toBe(group.id);
    }
    const after = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(after.enrollments).toBe(5);
    expect((await srv.admin.groups.get.query({ groupId: group.id })).counts.total).toBe(5);
  });

  it('refuses an expired key with KEY_EXPIRED and shows it as expired with no key to copy (behaviour 3)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Expiring');
    const early = await enrollSim(srv.url, key.key!);
    expect(early.ok).toBe(true);
    srv.clock.advance(14 * DAY_MS - 1000);
    expect((await enrollSim(srv.url, key.key!)).ok).toBe(true);
    srv.clock.advance(1000);
    const late = await enrollSim(srv.url, key.key!);
    expect(late).toMatchObject({ ok: false, status: 401, reason: 'KEY_EXPIRED' });
    const view = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(view).toMatchObject({ status: 'expired', key: null });
    const events = await srv.admin.audit.list.query({ type: 'enrollment.refused' });
    expect(events[0]).toMatchObject({ reason: 'KEY_EXPIRED', security: true, keyId: key.keyId });
  });

  it('regenerating refuses the old key at once, the new key works with a fresh expiry (behaviour 4)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Rotate');
    const enrolled = await enrollSim(srv.url, key.key!);
    srv.clock.advance(3 * DAY_MS);
    const fresh = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    expect(fresh.key).not.toBe(key.key);
    expect(fresh.keyId).not.toBe(key.keyId);
    expect(Date.parse(fresh.expiresAt)).toBe(srv.clock.now() + 14 * DAY_MS);
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({ ok: false, reason: 'KEY_SUPERSEDED' });
    expect((await enrollSim(srv.url, fresh.key!)).ok).toBe(true);
    // Existing connectors are untouched.
    const existing = await srv.admin.connectors.get.query({ connectorId: enrolled.enrolled!.connectorId });
    expect(existing.status).toBe('enabled');
    const security = await srv.admin.audit.list.query({ type: 'enrollment.refused' });
    expect(security[0]).toMatchObject({ reason: 'KEY_SUPERSEDED', security: true });
  });

  it('refuses an expired key that was then regenerated as superseded, and a regenerated key after expiry works', async () => {
    await using srv = await startTestServer();
    const { group } = await groupWithKey(srv, 'Renew');
    srv.clock.advance(20 * DAY_MS);
    const fresh = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    expect(fresh.status).toBe('active');
    expect((await enrollSim(srv.url, fresh.key!)).ok).toBe(true);
  });

  it('refuses unknown and malformed keys with KEY_INVALID', async () => {
    await using srv = await startTestServer();
    const { key } = await groupWithKey(srv, 'Guess');
    const wrongSecret = `${key.key!.slice(0, -4)}AAAA`;
    for (const candidate of ['cpk_nope', wrongSecret, 'cak_something', key.key!.toUpperCase()]) {
      expect(await enrollSim(srv.url, candidate)).toMatchObject({
        ok: false,
        status: 401,
        reason: 'KEY_INVALID',
      });
    }
  });

  it('a disabled group refuses enrollment with GROUP_DISABLED until enabled again (behaviour 8)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Off');
    await srv.admin.groups.disable.mutate({ groupId: group.id });
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({
      ok: false,
      status: 403,
      reason: 'GROUP_DISABLED',
    });
    await srv.admin.groups.enable.mutate({ groupId: group.id });
    expect((await enrollSim(srv.url, key.key!)).ok).toBe(true);
  });

  it('deleting a group with connectors needs force, which removes them; its keys stop working (behaviour 8)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Doomed');
    const enrolled = await enrollSim(srv.url, key.key!);
    const refused = await rawCall(srv.url, 'groups.delete', { groupId: group.id }, { key: srv.adminKey });
    expect(refused).toMatchObject({ ok: false, status: 412, reason: 'GROUP_NOT_EMPTY' });
    expect(await srv.admin.groups.delete.mutate({ groupId: group.id, force: true })).toEqual({
      deleted: true,
    });
    const gone = await rawCall(
      srv.url,
      'connectors.get',
      { connectorId: enrolled.enrolled!.connectorId },
      { key: srv.adminKey },
    );
    expect(gone).toMatchObject({ status: 404, reason: 'CONNECTOR_NOT_FOUND' });
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({ reason: 'KEY_INVALID' });
    expect(await rawCall(srv.url, 'groups.get', { groupId: group.id }, { key: srv.adminKey })).toMatchObject({
      status: 404,
      reason: 'GROUP_NOT_FOUND',
    });
  });

  it('a delete that names the connectors it expects is refused when more are there now (a host enrolled while the admin confirmed), and deletes nothing', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Confirmed');
    await enrollSim(srv.url, key.key!, 'seen');
    // The admin confirms "its 1 connector"; another host enrolls meanwhile.
    const late = (await enrollSim(srv.url, key.key!, 'unseen')).enrolled!;
    const refused = await rawCall(
      srv.url,
      'groups.delete',
      { groupId: group.id, force: true, expectedConnectors: 1 },
      { key: srv.adminKey },
    );
    expect(refused).toMatchObject({ ok: false, status: 412, reason: 'GROUP_NOT_EMPTY' });
    expect(refused.error?.message).toContain(
      'now has 2 connector(s), not the 1 expected: nothing was deleted',
    );
    expect((await srv.admin.connectors.get.query({ connectorId: late.connectorId })).name).toBe('unseen');
    // Confirmed again with the count it has now: deleted, both.
    expect(
      await srv.admin.groups.delete.mutate({ groupId: group.id, force: true, expectedConnectors: 2 }),
    ).toEqual({ deleted: true });
    expect((await srv.admin.connectors.list.query({})).items).toEqual([]);
  });

  it('deletes an empty group without force', async () => {
    await using srv = await startTestServer();
    const { group } = await groupWithKey(srv, 'Empty');
    expect(await srv.admin.groups.delete.mutate({ groupId: group.id })).toEqual({ deleted: true });
    expect(await srv.admin.groups.list.query({})).toEqual([]);
  });

  it('lists groups with counts, renames them (names unique, case-insensitive) and lists next steps', async () => {
    await using srv = await startTestServer();
    const a = await groupWithKey(srv, 'Alpha');
    const b = await groupWithKey(srv, 'Beta');
    await enrollSim(srv.url, a.key.key!);
    const list = await srv.admin.groups.list.query({});
    expect(list.map((g) => [g.name, g.counts.total, g.counts.neverConnected])).toEqual([
      ['Alpha', 1, 1],
      ['Beta', 0, 0],
    ]);
    expect((await srv.admin.groups.nextSteps.query({})).map((s) => s.groupId)).toEqual([b.group.id]);
    const taken = await rawCall(
      srv.url,
      'groups.update',
      { groupId: b.group.id, name: 'alpha' },
      { key: srv.adminKey },
    );
    expect(taken).toMatchObject({ status: 409, reason: 'NAME_TAKEN' });
    const dup = await rawCall(srv.url, 'groups.create', { name: 'ALPHA' }, { key: srv.adminKey });
    expect(dup).toMatchObject({ status: 409, reason: 'NAME_TAKEN' });
    const renamed = await srv.admin.groups.update.mutate({
      groupId: b.group.id,
      name: 'Gamma',
      description: 'lab',
    });
    expect(renamed).toMatchObject({ name: 'Gamma', description: 'lab' });
  });

  it('lists each group key among API keys, follows renames, and refuses to delete it (behaviour 9)', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Listed');
    const find = async () =>
      (await srv.admin.apiKeys.list.query({})).filter((k) => k.kind === 'provisioning');
    expect(await find()).toEqual([
      expect.objectContaining({
        id: key.keyId,
        name: 'Connector Provisioning Key - Listed',
        groupId: group.id,
        createdAt: key.createdAt,
      }),
    ]);
    await srv.admin.groups.update.mutate({ groupId: group.id, name: 'Renamed' });
    expect((await find())[0]?.name).toBe('Connector Provisioning Key - Renamed');
    const refused = await rawCall(srv.url, 'apiKeys.delete', { id: key.keyId }, { key: srv.adminKey });
    expect(refused).toMatchObject({ ok: false, reason: 'PROVISIONING_KEY_NOT_DELETABLE' });
    expect((await find())[0]?.id).toBe(key.keyId);
    const regenerated = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    expect((await find()).map((k) => k.id)).toEqual([regenerated.keyId]);
  });

  it('answers GROUP_NOT_FOUND for unknown groups on every group procedure', async () => {
    await using srv = await startTestServer();
    const groupId = 'grp_doesnotexist0000';
    for (const path of [
      'groups.get',
      'groups.update',
      'groups.disable',
      'groups.enable',
      'groups.delete',
      'provisioningKeys.get',
      'provisioningKeys.regenerate',
    ]) {
      const r = await rawCall(srv.url, path, { groupId }, { key: srv.adminKey });
      expect(r, path).toMatchObject({ ok: false, status: 404, reason: 'GROUP_NOT_FOUND' });
    }
  });

  it('refuses names that would hide or disguise themselves in a table (bidi, zero-width, lone surrogates)', async () => {
    await using srv = await startTestServer();
    for (const name of ['a\u202egnp.exe', '\u200b', 'x\ufeff', '\ud800', 'tab\there']) {
      const r = await rawCall(srv.url, 'groups.create', { name }, { key: srv.adminKey });
      expect(r, JSON.stringify(name)).toMatchObject({ status: 400, reason: 'VALIDATION_FAILED' });
    }
    expect((await rawCall(srv.url, 'groups.create', { name: 'Café 😀 Ω' }, { key: srv.adminKey })).ok).toBe(
      true,
    );
  });
});
