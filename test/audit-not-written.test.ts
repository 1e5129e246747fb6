import { afterEach, describe, expect, it } from 'vitest';
import { ERROR_REASONS } from '../shared/errors.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import { rawCall } from './helpers/server.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Makes every INSERT into audit_events fail as a full disk would (SQLSTATE 53100): the store's writes go on. */
const FAIL_AUDIT_WRITES = `
  CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$;
  CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit();`;
const HEAL_AUDIT_WRITES = 'DROP TRIGGER refuse_audit ON audit_events; DROP FUNCTION refuse_audit();';

/**
 * The audit log failing while the store does not (its table's disk full, say). A change saved before
 * its event was due used to be answered STORE_UNAVAILABLE, whose table entry says "nothing was
 * changed": a script reading the reason would redo a revoke, or think a connector still enabled.
 * Now: AUDIT_NOT_WRITTEN (the change was saved, its event is held), and an agent's enrollment or an
 * API key's creation, saved too, is answered with its identity or its secret, which a refusal
 * would have lost.
 */
describe('an audit log that cannot be written while the store can', () => {
  it('a saved change is answered AUDIT_NOT_WRITTEN, an enrollment goes through, and the held events are written once the log takes writes', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const [a] = await startReplicas(db.url, 1);
    cleanups.push(() => stopAll([a!]));
    const group = await a!.admin.groups.create.mutate({ name: 'Audit outage' });
    const key = (await a!.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const first = (await enrollSim(a!.url, key, 'before-outage')).enrolled!;
    const session = connectSim(a!.url, first);
    cleanups.push(() => session.close());
    await session.waitFor('ready');

    await withClient(db.url, (client) => client.query(FAIL_AUDIT_WRITES));
    const disabled = await rawCall(
      a!.url,
      'connectors.disable',
      { connectorId: first.connectorId },
      { key: a!.adminKey },
    );
    expect(disabled).toMatchObject({ ok: false, status: 500, reason: 'AUDIT_NOT_WRITTEN' });
    expect(disabled.error?.message).toMatch(
      /^The change was saved, but its audit event could not be written yet \(53100\)/,
    );
    expect(disabled.error?.data?.hint).toBe(ERROR_REASONS.AUDIT_NOT_WRITTEN.hint);
    // Saved and told to its agent, as any disable.
    expect((await a!.admin.connectors.get.query({ connectorId: first.connectorId })).status).toBe('disabled');
    expect(await session.waitFor('status')).toMatchObject({ status: 'disabled' });

    // An enrollment meanwhile: the agent gets its identity.
    const second = await enrollSim(a!.url, key, 'during-outage');
    expect(second).toMatchObject({ ok: true });
    const secondSession = connectSim(a!.url, second.enrolled!);
    cleanups.push(() => secondSession.close());
    await secondSession.waitFor('ready');
    // A refusal stays the refusal: "the change was saved" would be false, and an agent would not
    // go on to the next server, or retry.
    const stranger = await enrollSim(a!.url, 'cpk_madeup_0000000000000000000000000000000000000000', 'x');
    expect(stranger).toMatchObject({ ok: false, reason: 'KEY_INVALID' });
    const wrongKey = await rawCall(a!.url, 'groups.list', {}, { key: 'cak_wrong' });
    expect(wrongKey).toMatchObject({ ok: false, reason: 'ADMIN_KEY_INVALID' });
    // An API key made meanwhile is answered with its secret (shown once: refused, it reached nobody).
    const apiKey = await a!.admin.apiKeys.create.mutate({ name: 'during outage', scope: 'read' });
    expect(apiKey.key).toMatch(/^cak_/);
    // A group's disable too: saved, and its agents told.
    const groupDisabled = await rawCall(
      a!.url,
      'groups.disable',
      { groupId: group.id },
      { key: a!.adminKey },
    );
    expect(groupDisabled).toMatchObject({ ok: false, reason: 'AUDIT_NOT_WRITTEN' });
    expect(await secondSession.waitFor('status')).toMatchObject({ status: 'disabled' });

    await withClient(db.url, (client) => client.query(HEAL_AUDIT_WRITES));
    // The held events are written by the retry (backing off up to 5 s), in order.
    const written = async () => {
      const events = await a!.admin.audit.list.query({ limit: 20 });
      return events.map((e) => `${e.type}:${e.connectorId}`);
    };
    await expect
      .poll(written, { timeout: 15_000 })
      .toEqual(
        expect.arrayContaining([
          `connector.disabled:${first.connectorId}`,
          `enrollment.succeeded:${second.enrolled!.connectorId}`,
          'group.disabled:null',
          'api_key.created:null',
        ]),
      );
    const order = await written();
    expect(order.indexOf(`enrollment.succeeded:${second.enrolled!.connectorId}`)).toBeLessThan(
      order.indexOf(`connector.disabled:${first.connectorId}`),
    );
  });

  it('a pending sweep meanwhile: every connector it removed is audited once the log takes writes (not only the first)', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    // Swept by the server's own timer (every second) once 2 s old and never connected.
    const [a] = await startReplicas(db.url, 1, { config: { pendingTtlMs: 2000 } });
    cleanups.push(() => stopAll([a!]));
    const group = await a!.admin.groups.create.mutate({ name: 'Never connected' });
    const key = (await a!.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    await withClient(db.url, (client) => client.query(FAIL_AUDIT_WRITES));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await enrollSim(a!.url, key, `pending-${i}`)).enrolled!.connectorId);
    await expect
      .poll(async () => (await a!.admin.connectors.list.query({ groupId: group.id })).items.length, {
        timeout: 15_000,
      })
      .toBe(0);
    await withClient(db.url, (client) => client.query(HEAL_AUDIT_WRITES));
    const expired = async () =>
      (await a!.admin.audit.list.query({ type: 'connector.pending_expired' }))
        .map((e) => e.connectorId)
        .sort();
    await expect.poll(expired, { timeout: 15_000 }).toEqual([...ids].sort());
  });
});
