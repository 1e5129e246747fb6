import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { enrollSim } from './helpers/agent-sim.js';
import { startTestServer } from './helpers/server.js';

describe('audit log (behaviour 15)', () => {
  it('records every admin mutation and every enrollment attempt with address, key id and reason', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Audited' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const ok = await enrollSim(srv.url, key.key!);
    await enrollSim(srv.url, 'cpk_bogus');
    await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    await enrollSim(srv.url, key.key!);
    await srv.admin.connectors.disable.mutate({ connectorId: ok.enrolled!.connectorId });
    await srv.admin.connectors.revoke.mutate({ connectorId: ok.enrolled!.connectorId, reason: 'test' });
    await srv.admin.groups.update.mutate({ groupId: group.id, name: 'Audited2' });
    await srv.admin.groups.delete.mutate({ groupId: group.id, force: true });

    const events = await srv.admin.audit.list.query({ limit: 100 });
    const types = events.map((e) => e.type).reverse();
    expect(types).toEqual([
      'api_key.bootstrapped',
      'group.created',
      'enrollment.succeeded',
      'enrollment.refused',
      'provisioning_key.regenerated',
      'enrollment.refused',
      'connector.disabled',
      'connector.revoked',
      'group.updated',
      'group.deleted',
    ]);
    const [superseded, invalid] = events.filter((e) => e.type === 'enrollment.refused');
    expect(superseded).toMatchObject({
      reason: 'KEY_SUPERSEDED',
      security: true,
      keyId: key.keyId,
      remoteAddress: '127.0.0.1',
      outcome: 'refused',
    });
    expect(invalid).toMatchObject({
      reason: 'KEY_INVALID',
      security: false,
      keyId: null,
      remoteAddress: '127.0.0.1',
    });
    const success = events.find((e) => e.type === 'enrollment.succeeded');
    expect(success).toMatchObject({
      keyId: key.keyId,
      groupId: group.id,
      connectorId: ok.enrolled!.connectorId,
      outcome: 'success',
    });
    const adminEvent = events.find((e) => e.type === 'group.created');
    expect(adminEvent?.actor).toMatchObject({ kind: 'admin' });

    // Filters: type prefix, since, limit.
    expect(
      (await srv.admin.audit.list.query({ type: 'enrollment' })).every((e) =>
        e.type.startsWith('enrollment.'),
      ),
    ).toBe(true);
    expect(await srv.admin.audit.list.query({ limit: 2 })).toHaveLength(2);
    srv.clock.advance(60_000);
    const since = new Date(srv.clock.now()).toISOString();
    await srv.admin.groups.create.mutate({ name: 'Later' });
    expect((await srv.admin.audit.list.query({ since })).map((e) => e.type)).toEqual(['group.created']);
  });

  it('audits refused admin mutations', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Full' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    await enrollSim(srv.url, key.key!);
    await srv.admin.groups.delete.mutate({ groupId: group.id }).catch(() => {});
    const [refused] = await srv.admin.audit.list.query({ type: 'admin.refused' });
    expect(refused).toMatchObject({
      reason: 'GROUP_NOT_EMPTY',
      outcome: 'refused',
      details: { path: 'groups.delete' },
    });
  });

  it('is an append-only JSON-lines file beside the store, and skips a line torn by a crash', async () => {
    await using srv = await startTestServer();
    await srv.admin.groups.create.mutate({ name: 'One' });
    const file = join(srv.dataDir, 'audit.jsonl');
    const lines = (await readFile(file, 'utf8')).trim().split('\n');
    expect(lines.map((l) => JSON.parse(l).type)).toEqual(['api_key.bootstrapped', 'group.created']);
    await srv.stop();
    const { appendFile } = await import('node:fs/promises');
    await appendFile(file, '{"id":"evt_torn","at":"2026-');
    await using again = await startTestServer({ dataDir: srv.dataDir });
    await again.admin.groups.create.mutate({ name: 'Two' });
    const types = (await again.admin.audit.list.query({})).map((e) => e.type);
    expect(types).toEqual(['group.created', 'group.created', 'api_key.bootstrapped']);
  });
});

describe('lazy audit events (agent connects)', () => {
  it('are written without an fsync of their own: on disk within 250 ms, at once with the next durable event, and always in list() and after close', async () => {
    const { FileAuditLog, LAZY_AUDIT_FLUSH_MS } = await import('../server/services/audit.js');
    const { systemClock } = await import('../server/clock.js');
    const { tempDir } = await import('./helpers/server.js');
    const file = join(await tempDir(), 'audit.jsonl');
    const lines = async () =>
      (await readFile(file, 'utf8'))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l).type);
    const log = await FileAuditLog.open(file, systemClock);
    const actor = { kind: 'system' } as const;

    // Alone, a lazy event waits for the timer (nothing on disk at once), then is durable.
    const started = performance.now();
    const lazy = log.record({ type: 'session.connected', actor }, { lazy: true });
    expect(await lines()).toEqual([]);
    await lazy;
    expect(performance.now() - started).toBeGreaterThanOrEqual(LAZY_AUDIT_FLUSH_MS - 5);
    expect(await lines()).toEqual(['session.connected']);

    // A durable event carries the lazy ones buffered before it, in order, in one write.
    const lazy2 = log.record({ type: 'session.connected', actor }, { lazy: true });
    await log.record({ type: 'group.created', actor });
    await lazy2;
    expect(await lines()).toEqual(['session.connected', 'session.connected', 'group.created']);

    // list() and close() never miss a buffered lazy event.
    void log.record({ type: 'session.connected', actor, connectorId: 'con_listed' }, { lazy: true });
    expect((await log.list()).map((e) => e.connectorId)).toContain('con_listed');
    void log.record({ type: 'session.connected', actor, connectorId: 'con_closing' }, { lazy: true });
    await log.close();
    expect((await readFile(file, 'utf8')).includes('con_closing')).toBe(true);
  });
});

describe('audit durability', () => {
  it('an event resolves only after its line is synced; a rotation syncs the folder before the new file is written', async () => {
    const { FileAuditLog } = await import('../server/services/audit.js');
    const { ManualClock } = await import('../server/clock.js');
    const { tempDir } = await import('./helpers/server.js');
    const { SyncLog } = await import('./helpers/sync-log.js');
    const dir = await tempDir();
    const file = join(dir, 'audit.jsonl');
    const syncs = new SyncLog();
    const log = await FileAuditLog.open(file, new ManualClock(), { sync: syncs, maxBytes: 600, keep: 2 });
    const actor = { kind: 'system' } as const;
    for (let i = 0; i < 4; i++) {
      const from = syncs.entries.length;
      await log.record({ type: 'group.created', actor, details: { i, pad: 'x'.repeat(200) } });
      syncs.note('resolved');
      const seen = syncs.since(from);
      expect(seen.slice(-2), seen.join(', ')).toEqual(['synced audit.jsonl', 'resolved']);
    }
    // Past 600 bytes the file was rotated: its folder synced (twice: the renames, the new file),
    // each time before the next event was written to the new file.
    const folderSyncs = syncs.entries.filter((e) => e === 'synced folder').length;
    expect(folderSyncs).toBeGreaterThanOrEqual(2);
    expect(folderSyncs % 2).toBe(0);
    expect(syncs.entries.join(', ')).toContain('synced folder, synced folder, synced audit.jsonl, resolved');
    await log.close();
    await rm(dir, { recursive: true });
  });
});
