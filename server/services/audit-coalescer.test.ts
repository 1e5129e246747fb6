import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { type AuditEvent, type AuditInput, MemoryAuditLog } from './audit.js';

const WINDOW_MS = 1000;

function refusal(remoteAddress: string, more: Partial<AuditInput> = {}): AuditInput {
  return {
    type: 'enrollment.refused',
    actor: { kind: 'agent', connectorId: null },
    reason: 'KEY_INVALID',
    remoteAddress,
    ...more,
  };
}

const suppressed = (e: AuditEvent) => e.details.suppressed as number | undefined;
const total = (events: AuditEvent[]) => events.reduce((n, e) => n + (suppressed(e) ?? 1), 0);

function setup(maxKeys = 16) {
  const clock = new ManualClock();
  const log = new MemoryAuditLog(clock, { windowMs: WINDOW_MS, maxKeys });
  return { clock, log };
}

describe('AuditCoalescer (MemoryAuditLog.recordRefusal)', () => {
  it('writes the first refusal of a window at once and sums up the rest when the window is over', async () => {
    const { clock, log } = setup();
    for (let i = 0; i < 100; i++) await log.recordRefusal(refusal('192.0.2.1'));
    expect(log.events).toHaveLength(1);
    expect(log.events[0]).toMatchObject({ outcome: 'refused', reason: 'KEY_INVALID', details: {} });

    clock.advance(WINDOW_MS);
    await log.recordRefusal(refusal('192.0.2.1'));
    expect(log.events.map(suppressed)).toEqual([undefined, 99, undefined]);
    expect(log.events[1]!.details).toEqual({
      suppressed: 99,
      windowStart: log.events[0]!.at,
      windowEnd: log.events[2]!.at,
    });
    expect(total(log.events)).toBe(101);
  });

  it('keeps one window per (type, reason, address)', async () => {
    const { log } = setup();
    for (const address of ['192.0.2.1', '192.0.2.2'])
      for (const reason of ['KEY_INVALID', 'RATE_LIMITED'])
        for (let i = 0; i < 3; i++) await log.recordRefusal(refusal(address, { reason }));
    await log.recordRefusal(refusal('192.0.2.1', { type: 'session.refused' }));
    expect(log.events).toHaveLength(5);
    await log.close();
    expect(log.events).toHaveLength(9);
    expect(total(log.events)).toBe(13);
  });

  it('close() and list() write the counts of open windows; list() leaves the window open', async () => {
    const { clock, log } = setup();
    for (let i = 0; i < 4; i++) await log.recordRefusal(refusal('192.0.2.1'));
    clock.advance(10);
    expect((await log.list()).map(suppressed)).toEqual([3, undefined]);
    await log.recordRefusal(refusal('192.0.2.1'));
    expect(log.events).toHaveLength(2);
    clock.advance(10);
    await log.close();
    expect(log.events.map(suppressed)).toEqual([undefined, 3, 1]);
    // Each summary covers the span after the one before it.
    expect(log.events[2]!.details.windowStart).toBe(log.events[1]!.details.windowEnd);
    expect(log.events[2]!.details.windowEnd).toBe(new Date(clock.now()).toISOString());
  });

  it('a window that counted nothing ends without a summary', async () => {
    const { clock, log } = setup();
    await log.recordRefusal(refusal('192.0.2.1'));
    clock.advance(WINDOW_MS);
    await log.recordRefusal(refusal('192.0.2.1'));
    await log.close();
    expect(log.events.map(suppressed)).toEqual([undefined, undefined]);
  });

  it('keeps the security flag, and in the summary only the fields every counted refusal shared', async () => {
    const { log } = setup();
    const superseded = { reason: 'KEY_SUPERSEDED', security: true, groupId: 'grp_a' };
    await log.recordRefusal(refusal('192.0.2.1', { ...superseded, keyId: 'pk_1', details: { path: 'x' } }));
    await log.recordRefusal(refusal('192.0.2.1', { ...superseded, keyId: 'pk_2', details: { path: 'x' } }));
    await log.close();
    expect(log.events[1]).toMatchObject({
      reason: 'KEY_SUPERSEDED',
      security: true,
      outcome: 'refused',
      groupId: 'grp_a',
      keyId: null,
      remoteAddress: '192.0.2.1',
      details: { path: 'x', suppressed: 1 },
    });
  });

  it('past maxKeys addresses, new ones share one window per (type, reason), with no address', async () => {
    const { log } = setup(2);
    for (let host = 1; host <= 50; host++)
      for (let i = 0; i < 2; i++) await log.recordRefusal(refusal(`192.0.2.${host}`));
    // Two addresses with windows of their own, the first of the rest opening the shared one.
    expect(log.events.map((e) => e.remoteAddress)).toEqual(['192.0.2.1', '192.0.2.2', '192.0.2.3']);
    await log.close();
    const shared = log.events.find((e) => e.details.otherAddresses === true);
    expect(shared).toMatchObject({ remoteAddress: null, details: { suppressed: 95 } });
    expect(total(log.events)).toBe(100);
  });
});
