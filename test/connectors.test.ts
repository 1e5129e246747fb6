import { describe, expect, it } from 'vitest';
import { DAY_MS } from '../shared/durations.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { rawCall, startTestServer } from './helpers/server.js';

async function fleet(srv: Awaited<ReturnType<typeof startTestServer>>, groupName: string, n: number) {
  const group = await srv.admin.groups.create.mutate({ name: groupName });
  const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
  const enrolled = [];
  for (let i = 0; i < n; i++)
    enrolled.push((await enrollSim(srv.url, key.key!, `${groupName}-${i}`)).enrolled!);
  return { group, key, enrolled };
}

describe('connector records', () => {
  it('records host facts, agent version and remote address at enrollment', async () => {
    await using srv = await startTestServer();
    const { enrolled } = await fleet(srv, 'Facts', 1);
    const c = await srv.admin.connectors.get.query({ connectorId: enrolled[0]!.connectorId });
    expect(c).toMatchObject({
      name: 'Facts-0',
      status: 'enabled',
      connection: 'never',
      agentVersion: 'test',
      remoteAddress: '127.0.0.1',
      host: { hostname: 'Facts-0', platform: 'linux', cpus: 2 },
      lastConnectedAt: null,
    });
    expect(Date.parse(c.identity.expiresAt) - Date.parse(c.identity.issuedAt)).toBe(365 * DAY_MS);
  });

  it('pages through connectors with a cursor and filters by group, status and connection', async () => {
    await using srv = await startTestServer();
    const a = await fleet(srv, 'A', 7);
    const b = await fleet(srv, 'B', 3);
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page++) {
      const r = await srv.admin.connectors.list.query({ limit: 3, ...(cursor ? { cursor } : {}) });
      seen.push(...r.items.map((i) => i.id));
      if (!r.nextCursor) break;
      cursor = r.nextCursor;
    }
    // The clock stood still: one enrolledAt for all, so the ids give the order.
    expect(seen).toEqual([...a.enrolled, ...b.enrolled].map((e) => e.connectorId).toSorted());
    const onlyB = await srv.admin.connectors.list.query({ groupId: b.group.id });
    expect(onlyB.items.map((i) => i.id)).toEqual(b.enrolled.map((e) => e.connectorId).toSorted());
    await srv.admin.connectors.disable.mutate({ connectorId: a.enrolled[1]!.connectorId });
    const disabled = await srv.admin.connectors.list.query({ status: 'disabled' });
    expect(disabled.items.map((i) => i.id)).toEqual([a.enrolled[1]!.connectorId]);
    const session = connectSim(srv.url, b.enrolled[0]!);
    await session.waitFor('ready');
    const connected = await srv.admin.connectors.list.query({ connection: 'connected' });
    expect(connected.items.map((i) => i.id)).toEqual([b.enrolled[0]!.connectorId]);
    expect((await srv.admin.connectors.list.query({ connection: 'never' })).items).toHaveLength(9);
    await session.close();
  });

  it('pages exactly through connectors enrolled in the same millisecond while the cursor connector is deleted each time', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'SameMs' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    // The clock stands still: all 23 share one enrolledAt, so only the id tells them apart.
    const ids = await Promise.all(
      Array.from(
        { length: 23 },
        async (_, i) => (await enrollSim(srv.url, key.key!, `same-${i}`)).enrolled!.connectorId,
      ),
    );
    const seen: string[] = [];
    const pageSizes: number[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 20; page++) {
      const r = await srv.admin.connectors.list.query({ limit: 4, ...(cursor ? { cursor } : {}) });
      pageSizes.push(r.items.length);
      seen.push(...r.items.map((i) => i.id));
      if (!r.nextCursor) break;
      cursor = r.nextCursor;
      // The connector the cursor names goes away before the next page is asked for.
      await srv.admin.connectors.delete.mutate({ connectorId: r.items.at(-1)!.id });
    }
    expect(seen.toSorted()).toEqual(ids.toSorted());
    expect(new Set(seen).size).toBe(seen.length);
    expect(pageSizes).toEqual([4, 4, 4, 4, 4, 3]);
    // A cursor that is not one is refused, not read as the start of the list.
    for (const bad of ['nodash', '-con_x', 'ZZ-con_x', 'zzzzzzzzzzzz-con_x']) {
      const r = await rawCall(srv.url, 'connectors.list', { cursor: bad }, { key: srv.adminKey });
      expect(r, bad).toMatchObject({ ok: false, status: 400, reason: 'VALIDATION_FAILED' });
    }
  });

  it('counts connectors by status and connection', async () => {
    await using srv = await startTestServer();
    const { enrolled } = await fleet(srv, 'Count', 4);
    await srv.admin.connectors.disable.mutate({ connectorId: enrolled[0]!.connectorId });
    await srv.admin.connectors.revoke.mutate({ connectorId: enrolled[1]!.connectorId });
    const live = connectSim(srv.url, enrolled[2]!);
    await live.waitFor('ready');
    expect(await srv.admin.connectors.counts.query({})).toEqual({
      total: 4,
      connected: 1,
      disconnected: 0,
      neverConnected: 3,
      enabled: 2,
      disabled: 1,
      revoked: 1,
    });
    await live.close();
  });

  it('revoking marks the connector revoked, regenerates its group key in the same step and touches no other connector (behaviour 5)', async () => {
    await using srv = await startTestServer();
    const { group, key, enrolled } = await fleet(srv, 'Rev', 2);
    const revoked = await srv.admin.connectors.revoke.mutate({
      connectorId: enrolled[0]!.connectorId,
      reason: 'stolen laptop',
    });
    expect(revoked).toMatchObject({ status: 'revoked', revokeReason: 'stolen laptop' });
    const newKey = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(newKey.keyId).not.toBe(key.keyId);
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({ reason: 'KEY_SUPERSEDED' });
    expect((await srv.admin.connectors.get.query({ connectorId: enrolled[1]!.connectorId })).status).toBe(
      'enabled',
    );
    // Revoked is for good: it cannot be enabled or disabled; revoking again changes nothing.
    for (const path of ['connectors.enable', 'connectors.disable']) {
      const r = await rawCall(
        srv.url,
        path,
        { connectorId: enrolled[0]!.connectorId },
        { key: srv.adminKey },
      );
      expect(r).toMatchObject({ status: 403, reason: 'CONNECTOR_REVOKED' });
    }
    await srv.admin.connectors.revoke.mutate({ connectorId: enrolled[0]!.connectorId });
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).keyId).toBe(newKey.keyId);
  });

  it('disable and enable change the status and keep the record (behaviour 6, record side)', async () => {
    await using srv = await startTestServer();
    const { enrolled } = await fleet(srv, 'Toggle', 1);
    const id = enrolled[0]!.connectorId;
    expect((await srv.admin.connectors.disable.mutate({ connectorId: id })).status).toBe('disabled');
    expect((await srv.admin.connectors.enable.mutate({ connectorId: id })).status).toBe('enabled');
  });

  it('delete removes the record; later calls answer CONNECTOR_NOT_FOUND (behaviour 7, record side)', async () => {
    await using srv = await startTestServer();
    const { enrolled } = await fleet(srv, 'Gone', 1);
    const id = enrolled[0]!.connectorId;
    // No live session to tell: pending (see revocation-receipts.test.ts for the live side).
    expect(await srv.admin.connectors.delete.mutate({ connectorId: id })).toEqual({
      deleted: true,
      termination: { state: 'pending', confirmedAt: null, confirmedFrom: null },
    });
    for (const path of ['connectors.get', 'connectors.delete', 'connectors.revoke', 'connectors.disable']) {
      expect(await rawCall(srv.url, path, { connectorId: id }, { key: srv.adminKey })).toMatchObject({
        status: 404,
        reason: 'CONNECTOR_NOT_FOUND',
      });
    }
  });

  it('removes connectors that never connected after pending-ttl, and keeps those that did (behaviour 10)', async () => {
    await using srv = await startTestServer({ config: { pendingTtlMs: 2 * DAY_MS } });
    const { enrolled } = await fleet(srv, 'Pending', 3);
    const session = connectSim(srv.url, enrolled[0]!);
    await session.waitFor('ready');
    await session.close();
    srv.clock.advance(2 * DAY_MS - 1);
    expect(await srv.server.sweepPending()).toEqual([]);
    srv.clock.advance(1);
    const removed = await srv.server.sweepPending();
    expect(removed.sort()).toEqual([enrolled[1]!.connectorId, enrolled[2]!.connectorId].sort());
    const left = await srv.admin.connectors.list.query({});
    expect(left.items.map((i) => i.id)).toEqual([enrolled[0]!.connectorId]);
    const audit = await srv.admin.audit.list.query({ type: 'connector.pending_expired' });
    expect(audit).toHaveLength(2);
  });
});

describe('whole-group changes reach every live session, a slice per event-loop turn', () => {
  it('disable, enable and force-delete of a group with more sessions than one slice', async () => {
    // Slices of 2 over 7 sessions: the last slice is partial, and all of them must still be told.
    await using srv = await startTestServer({ config: { sessionsPerTurn: 2 } });
    const { group, enrolled } = await fleet(srv, 'Sliced', 7);
    const sessions = enrolled.map((e) => connectSim(srv.url, e));
    await Promise.all(sessions.map((s) => s.waitFor('ready')));
    const statuses = () =>
      sessions.map((s) => s.events.filter((e) => e.type === 'status').map((e) => e.status));

    await srv.admin.groups.disable.mutate({ groupId: group.id });
    await expect.poll(statuses).toEqual(sessions.map(() => ['disabled']));
    await srv.admin.groups.enable.mutate({ groupId: group.id });
    await expect.poll(statuses).toEqual(sessions.map(() => ['disabled', 'enabled']));

    await srv.admin.groups.delete.mutate({ groupId: group.id, force: true });
    const closes = await Promise.all(sessions.map((s) => s.waitForClose()));
    expect(closes).toEqual(sessions.map(() => ({ code: 4004, reason: 'CONNECTOR_NOT_FOUND' })));
    expect(sessions.every((s) => s.events.at(-1)?.type === 'deleted')).toBe(true);
    await expect.poll(() => srv.server.hub.size).toBe(0);
  });
});
