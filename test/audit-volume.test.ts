import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import type { AuditEvent } from '../server/services/audit.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim, hostFacts, openSession } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { rawCall, startTestServer } from './helpers/server.js';

const WINDOW_MS = 60_000;

async function auditLines(dataDir: string): Promise<AuditEvent[]> {
  const text = await readFile(join(dataDir, 'audit.jsonl'), 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditEvent);
}

/** How many refusals the events stand for: a summary its `details.suppressed`, any other one. */
function refusalsIn(events: AuditEvent[], type: string, reason: string): number {
  return events
    .filter((e) => e.type === type && e.reason === reason)
    .reduce((sum, e) => sum + ((e.details.suppressed as number | undefined) ?? 1), 0);
}

describe('refusals a stranger can repeat add a bounded number of audit lines (coalesced per address and reason)', () => {
  it('500 enrollments with a made-up key: 2 lines while it lasts, and the counts add up to every attempt; a new window after the clock moves; close() writes what is still counted', async () => {
    await using srv = await startTestServer();
    const { publicJwk } = await generateAgentKeyPair();
    const attempt = () =>
      rawCall(srv.url, 'agent.enroll', {
        provisioningKey: `cpk_madeup0001_${'x'.repeat(43)}`,
        publicKey: publicJwk,
        host: hostFacts('stranger'),
        agentVersion: 'test',
      });
    const before = (await auditLines(srv.dataDir)).length;
    const answers = new Map<string, number>();
    for (let i = 0; i < 500; i++) {
      const { reason } = await attempt();
      answers.set(reason!, (answers.get(reason!) ?? 0) + 1);
    }
    // Past the failure allowance (60 per address) the made-up key is refused as RATE_LIMITED.
    expect(answers).toEqual(
      new Map([
        ['KEY_INVALID', 60],
        ['RATE_LIMITED', 440],
      ]),
    );
    const during = (await auditLines(srv.dataDir)).slice(before);
    expect(during.map((e) => [e.type, e.reason])).toEqual([
      ['enrollment.refused', 'KEY_INVALID'],
      ['enrollment.refused', 'RATE_LIMITED'],
    ]);
    expect(during[1]).toMatchObject({ security: true, remoteAddress: '127.0.0.1' });

    // Listing writes the counts not yet written; the window stays open.
    const listed = await srv.admin.audit.list.query({ type: 'enrollment.refused', limit: 1000 });
    expect(listed).toHaveLength(4);
    expect(refusalsIn(listed, 'enrollment.refused', 'KEY_INVALID')).toBe(60);
    expect(refusalsIn(listed, 'enrollment.refused', 'RATE_LIMITED')).toBe(440);
    const summary = listed.find((e) => e.reason === 'RATE_LIMITED' && e.details.suppressed === 439)!;
    expect(summary).toMatchObject({ outcome: 'refused', security: true, remoteAddress: '127.0.0.1' });
    expect(Date.parse(summary.details.windowEnd as string)).toBeGreaterThanOrEqual(
      Date.parse(summary.details.windowStart as string),
    );
    const afterList = (await auditLines(srv.dataDir)).length;

    // Still inside the window: counted, not written.
    for (let i = 0; i < 5; i++) expect((await attempt()).reason).toBe('RATE_LIMITED');
    expect((await auditLines(srv.dataDir)).length).toBe(afterList);

    // Past the window: its 5 are summed up, and the next refusal opens a new window, written at once.
    srv.clock.advance(WINDOW_MS);
    expect((await attempt()).reason).toBe('RATE_LIMITED');
    const next = (await auditLines(srv.dataDir)).slice(afterList);
    expect(next.map((e) => [e.reason, e.details.suppressed])).toEqual([
      ['RATE_LIMITED', 5],
      ['RATE_LIMITED', undefined],
    ]);
    expect(next[0]!.details.windowEnd).toBe(new Date(Date.parse(next[1]!.at)).toISOString());

    // Shutdown writes what the open window counted.
    for (let i = 0; i < 9; i++) await attempt();
    await srv.stop();
    const all = await auditLines(srv.dataDir);
    expect(all.at(-1)).toMatchObject({ reason: 'RATE_LIMITED', details: { suppressed: 9 } });
    expect(refusalsIn(all, 'enrollment.refused', 'KEY_INVALID')).toBe(60);
    expect(refusalsIn(all, 'enrollment.refused', 'RATE_LIMITED')).toBe(440 + 5 + 1 + 9);
    expect(all.length - before).toBe(2 + 2 + 2 + 1);
  });

  it('made-up admin keys: audited as admin.refused ADMIN_KEY_INVALID (then RATE_LIMITED), one line per window and reason with a count', async () => {
    await using srv = await startTestServer();
    const before = (await auditLines(srv.dataDir)).length;
    for (let i = 0; i < 50; i++) {
      const answer = await rawCall(srv.url, 'groups.list', {}, { key: `cak_made${i}up_${'y'.repeat(43)}` });
      expect(answer).toMatchObject(
        i < 10 ? { status: 401, reason: 'ADMIN_KEY_INVALID' } : { status: 429, reason: 'RATE_LIMITED' },
      );
    }
    expect((await rawCall(srv.url, 'groups.create', { name: 'x' })).status).toBe(429);
    const during = (await auditLines(srv.dataDir)).slice(before);
    expect(during.map((e) => e.reason)).toEqual(['ADMIN_KEY_INVALID', 'RATE_LIMITED']);
    expect(during[0]).toMatchObject({
      type: 'admin.refused',
      outcome: 'refused',
      reason: 'ADMIN_KEY_INVALID',
      security: true,
      actor: { kind: 'anonymous' },
      remoteAddress: '127.0.0.1',
      details: { path: 'groups.list' },
    });
    const listed = await srv.admin.audit.list.query({ type: 'admin.refused' });
    expect(refusalsIn(listed, 'admin.refused', 'ADMIN_KEY_INVALID')).toBe(10);
    expect(refusalsIn(listed, 'admin.refused', 'RATE_LIMITED')).toBe(41);
    // The paths differed, so the summary names none.
    const summary = listed.find((e) => e.reason === 'RATE_LIMITED' && e.details.suppressed);
    expect(summary?.details).not.toHaveProperty('path');
    // The CLI's table shows how many refusals a summary row stands for.
    const table = await serverCli([
      'audit',
      '--type',
      'admin.refused',
      '--server',
      srv.url,
      '--admin-key-file',
      srv.server.adminKeyFile,
    ]);
    const reasons = table.stdout
      .split('\n')
      .slice(1)
      .map((line) => /(ADMIN_KEY_INVALID|RATE_LIMITED)( ×\d+)?/.exec(line)?.[0])
      .filter(Boolean);
    expect(reasons.sort()).toEqual([
      'ADMIN_KEY_INVALID',
      'ADMIN_KEY_INVALID ×9',
      'RATE_LIMITED',
      'RATE_LIMITED ×40',
    ]);
  });

  it('refused websocket handshakes: one session.refused line per window, counted', async () => {
    await using srv = await startTestServer();
    const before = (await auditLines(srv.dataDir)).length;
    for (let i = 0; i < 20; i++) {
      const bad = openSession(srv.url, { identity: 'not.a.jwt', proof: 'nope' });
      expect(await bad.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'IDENTITY_INVALID' });
      await bad.close();
    }
    const during = (await auditLines(srv.dataDir)).slice(before);
    expect(during.map((e) => [e.type, e.reason])).toEqual([['session.refused', 'IDENTITY_INVALID']]);
    await srv.stop();
    const all = await auditLines(srv.dataDir);
    expect(refusalsIn(all, 'session.refused', 'IDENTITY_INVALID')).toBe(20);
  });

  it('a revoked identity tried again: session.refused names its connector (a security event), each connector in a window of its own', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Stolen' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const first = (await enrollSim(srv.url, key, 'stolen-1')).enrolled!;
    await srv.admin.connectors.revoke.mutate({ connectorId: first.connectorId });
    const newKey = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const second = (await enrollSim(srv.url, newKey, 'stolen-2')).enrolled!;
    await srv.admin.connectors.revoke.mutate({ connectorId: second.connectorId });
    for (const enrolled of [first, first, first, second]) {
      const sim = connectSim(srv.url, enrolled);
      expect((await sim.waitForClose()).reason).toBe('CONNECTOR_REVOKED');
      await sim.close();
    }
    const refused = (await srv.admin.audit.list.query({ type: 'session.refused' })).filter(
      (e) => e.reason === 'CONNECTOR_REVOKED',
    );
    expect(refusalsIn(refused, 'session.refused', 'CONNECTOR_REVOKED')).toBe(4);
    const byConnector = new Map<string | null, number>();
    for (const e of refused)
      byConnector.set(
        e.connectorId,
        (byConnector.get(e.connectorId) ?? 0) + ((e.details.suppressed as number) ?? 1),
      );
    expect(Object.fromEntries(byConnector)).toEqual({ [first.connectorId]: 3, [second.connectorId]: 1 });
    expect(refused.every((e) => e.security && e.actor.kind === 'agent')).toBe(true);
    // A handshake that proves nothing names nothing.
    const bad = openSession(srv.url, { identity: 'not.a.jwt', proof: 'nope' });
    await bad.waitForClose();
    await bad.close();
    const invalid = (await srv.admin.audit.list.query({ type: 'session.refused' })).find(
      (e) => e.reason === 'IDENTITY_INVALID',
    );
    expect(invalid?.connectorId).toBeNull();
  });
});
