import { mkdir, rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { connectSim, type Enrolled, enrollSim } from './helpers/agent-sim.js';
import { rawCall, startTestServer } from './helpers/server.js';

async function fleet(srv: Awaited<ReturnType<typeof startTestServer>>, groupName: string, n: number) {
  const group = await srv.admin.groups.create.mutate({ name: groupName });
  const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
  const enrolled: Enrolled[] = [];
  for (let i = 0; i < n; i++)
    enrolled.push((await enrollSim(srv.url, key.key!, `${groupName}-${i}`)).enrolled!);
  return { group, key, enrolled };
}

// The write is made to fail by taking the data dir away (and given back for the retry).
describe('a revoke or delete that cut agents off but could not be saved', () => {
  it('a revoke whose write fails says so (REVOKE_NOT_SAVED: the agent was cut off and told, nothing saved), keeps refusing the connector, and a retry saves it', async () => {
    await using srv = await startTestServer();
    const { group, key, enrolled } = await fleet(srv, 'FailSafe', 2);
    const [target, bystander] = enrolled as [Enrolled, Enrolled];
    const session = connectSim(srv.url, target);
    const other = connectSim(srv.url, bystander);
    await Promise.all([session.waitFor('ready'), other.waitFor('ready')]);
    // The two moments of a change: applied (the live side acts) and committed (it is durable).
    const heard: string[] = [];
    for (const moment of ['applied', 'committed'] as const)
      srv.server.services.events.on(moment, (e) => heard.push(`${moment} ${e.type}`));
    // Take the data dir away: the revocation cannot be made durable.
    await rm(srv.dataDir, { recursive: true, force: true });
    const r = await rawCall(
      srv.url,
      'connectors.revoke',
      { connectorId: target.connectorId },
      { key: srv.adminKey },
    );
    expect(r).toMatchObject({ ok: false, status: 500, reason: 'REVOKE_NOT_SAVED' });
    expect(r.error.message).toMatch(/live session was ended and its agent told it is revoked/);
    expect(r.error.message).toMatch(/could not be saved.*retry the revoke/);
    expect(r.error.data).toMatchObject({ sessionsEnded: 1, termination: { state: 'pending' } });
    // What the agent saw: told it is revoked, its socket closed as revoked (a real agent wipes itself).
    expect(session.events.at(-1)).toMatchObject({ type: 'revoked' });
    expect(await session.waitForClose()).toEqual({ code: 4003, reason: 'CONNECTOR_REVOKED' });
    // The record is what the disk says; the key was not regenerated; nobody else was touched.
    expect((await srv.admin.connectors.get.query({ connectorId: target.connectorId })).status).toBe(
      'enabled',
    );
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).keyId).toBe(key.keyId);
    expect(other.closes).toEqual([]);
    // Yet the identity it was told is revoked does not get back in while the revoke is unsaved.
    const again = connectSim(srv.url, target);
    expect(await again.waitForClose()).toEqual({ code: 4001, reason: 'CONNECTOR_REVOKED' });

    // Applied (the agent was cut off), never committed.
    expect(heard).toEqual(['applied connector.revoked']);

    await mkdir(srv.dataDir, { recursive: true, mode: 0o700 });
    const retried = await srv.admin.connectors.revoke.mutate({ connectorId: target.connectorId });
    expect(retried.status).toBe('revoked');
    expect(heard).toEqual([
      'applied connector.revoked',
      'applied connector.revoked',
      'committed connector.revoked',
    ]);
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).keyId).not.toBe(key.keyId);
    await Promise.all([session.close(), other.close(), again.close()]);
  });

  it('a delete whose write fails says so (DELETE_NOT_SAVED), keeps the connector out, and a retry deletes it', async () => {
    await using srv = await startTestServer();
    const { enrolled } = await fleet(srv, 'FailDelete', 1);
    const target = enrolled[0]!;
    const session = connectSim(srv.url, target);
    await session.waitFor('ready');
    await rm(srv.dataDir, { recursive: true, force: true });
    const r = await rawCall(
      srv.url,
      'connectors.delete',
      { connectorId: target.connectorId },
      { key: srv.adminKey },
    );
    expect(r).toMatchObject({ ok: false, status: 500, reason: 'DELETE_NOT_SAVED' });
    expect(r.error.message).toMatch(/agent told it is deleted.*the record is still there.*retry the delete/);
    expect(session.events.at(-1)).toMatchObject({ type: 'deleted' });
    expect(await session.waitForClose()).toEqual({ code: 4004, reason: 'CONNECTOR_NOT_FOUND' });
    expect((await srv.admin.connectors.get.query({ connectorId: target.connectorId })).id).toBe(
      target.connectorId,
    );
    const again = connectSim(srv.url, target);
    expect((await again.waitForClose()).code).toBe(4001);

    await mkdir(srv.dataDir, { recursive: true, mode: 0o700 });
    expect(await srv.admin.connectors.delete.mutate({ connectorId: target.connectorId })).toMatchObject({
      deleted: true,
    });
    const gone = await rawCall(
      srv.url,
      'connectors.get',
      { connectorId: target.connectorId },
      { key: srv.adminKey },
    );
    expect(gone).toMatchObject({ status: 404, reason: 'CONNECTOR_NOT_FOUND' });
    await Promise.all([session.close(), again.close()]);
  });

  it('a revoke of a connector with no live session whose write fails says no session was ended', async () => {
    await using srv = await startTestServer();
    const { enrolled } = await fleet(srv, 'FailOffline', 1);
    await rm(srv.dataDir, { recursive: true, force: true });
    const r = await rawCall(
      srv.url,
      'connectors.revoke',
      { connectorId: enrolled[0]!.connectorId },
      { key: srv.adminKey },
    );
    expect(r).toMatchObject({ ok: false, reason: 'REVOKE_NOT_SAVED' });
    expect(r.error.message).toMatch(/^It had no live session; the revocation could not be saved/);
    expect(r.error.data).toMatchObject({ sessionsEnded: 0 });
    // Not let in until a revoke is saved: its identity is refused as revoked meanwhile.
    const late = connectSim(srv.url, enrolled[0]!);
    expect(await late.waitForClose()).toEqual({ code: 4001, reason: 'CONNECTOR_REVOKED' });
    await late.close();
  });
  it('a group force-delete whose write fails says so (DELETE_NOT_SAVED): its agents were told, the group is still there, none gets back in, a retry deletes it', async () => {
    await using srv = await startTestServer();
    const { group, enrolled } = await fleet(srv, 'FailGroup', 3);
    const live = enrolled.slice(0, 2).map((e) => connectSim(srv.url, e));
    await Promise.all(live.map((s) => s.waitFor('ready')));
    await rm(srv.dataDir, { recursive: true, force: true });
    const r = await rawCall(
      srv.url,
      'groups.delete',
      { groupId: group.id, force: true },
      { key: srv.adminKey },
    );
    expect(r).toMatchObject({ ok: false, status: 500, reason: 'DELETE_NOT_SAVED' });
    expect(r.error.message).toMatch(
      /^The group's 2 live session\(s\) were ended .* the group, its key and its 3 connector\(s\) are still there\..*retry the delete/,
    );
    expect(r.error.data).toMatchObject({ sessionsEnded: 2 });
    for (const s of live)
      expect(await s.waitForClose()).toEqual({ code: 4004, reason: 'CONNECTOR_NOT_FOUND' });
    expect((await srv.admin.groups.get.query({ groupId: group.id })).counts.total).toBe(3);
    for (const e of enrolled) {
      const again = connectSim(srv.url, e);
      expect((await again.waitForClose()).code).toBe(4001);
      await again.close();
    }
    await mkdir(srv.dataDir, { recursive: true, mode: 0o700 });
    expect(await srv.admin.groups.delete.mutate({ groupId: group.id, force: true })).toEqual({
      deleted: true,
    });
    expect(await srv.admin.groups.list.query({})).toEqual([]);
    await Promise.all(live.map((s) => s.close()));
  });

  it('a delete of an empty group whose write fails changed nothing: STORE_UNAVAILABLE', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Empty' });
    await rm(srv.dataDir, { recursive: true, force: true });
    const r = await rawCall(srv.url, 'groups.delete', { groupId: group.id }, { key: srv.adminKey });
    expect(r).toMatchObject({ ok: false, status: 500, reason: 'STORE_UNAVAILABLE' });
    expect((await srv.admin.groups.get.query({ groupId: group.id })).name).toBe('Empty');
  });
});
