import { describe, expect, it } from 'vitest';
import type { ManualClock } from '../../server/clock.js';
import type { AuditEvent, AuditLog } from '../../server/services/audit.js';

/** An audit log under test, as its backend makes it. */
export interface AuditLogUnderTest {
  log: AuditLog;
  clock: ManualClock;
  /**
   * A second log over the same durable events, the first left open: what another replica sees, or
   * a restart after a crash.
   */
  reopen(): Promise<AuditLog>;
  /** Closes what the backend opened (the logs the test made are the test's) and removes its files. */
  cleanup(): Promise<void>;
}

const actor = { kind: 'system' } as const;

/** Pages through `log` `size` at a time with `before`, as a console does; bounded at 1000 pages. */
async function allPages(
  log: AuditLog,
  size: number,
  filter: { type?: string; security?: boolean } = {},
): Promise<string[]> {
  const ids: string[] = [];
  let before: string | undefined;
  for (let i = 0; i < 1000; i++) {
    const page = await log.list({ ...filter, limit: size, ...(before ? { before } : {}) });
    ids.push(...page.map((e) => e.id));
    if (page.length < size) return ids;
    before = page.at(-1)!.id;
  }
  throw new Error('more than 1000 pages');
}

/** The behaviour every durable AuditLog backend must have: run it against each one. */
export function describeAuditContract(backend: string, open: () => Promise<AuditLogUnderTest>): void {
  describe(`AuditLog contract: ${backend}`, () => {
    it('an event resolves complete, once durable: another log over the same events lists it at once', async () => {
      const t = await open();
      try {
        const event = await t.log.record({ type: 'group.created', actor, groupId: 'grp_1' });
        expect(event).toEqual({
          id: expect.stringMatching(/^evt_/),
          at: new Date(t.clock.now()).toISOString(),
          type: 'group.created',
          actor,
          outcome: 'success',
          reason: null,
          security: false,
          remoteAddress: null,
          groupId: 'grp_1',
          connectorId: null,
          keyId: null,
          details: {},
        });
        const other = await t.reopen();
        expect(await other.list()).toEqual([event]);
        await other.close();
        await t.log.close();
      } finally {
        await t.cleanup();
      }
    });

    it('pages newest first with `before`, stable when every event has the same time: no loss, no repeat, same pages from another log', async () => {
      const t = await open();
      try {
        // The clock never moves: every event has one `at`, so only the order they were recorded in
        // tells them apart.
        const recorded: AuditEvent[] = [];
        for (let n = 0; n < 23; n++)
          recorded.push(await t.log.record({ type: 'test.event', actor, details: { n } }));
        const newestFirst = recorded.map((e) => e.id).reverse();
        expect((await t.log.list({ limit: 100 })).map((e) => e.id)).toEqual(newestFirst);
        expect(await allPages(t.log, 5)).toEqual(newestFirst);
        const other = await t.reopen();
        expect(await allPages(other, 7)).toEqual(newestFirst);
        // A cursor the log does not hold: nothing older is known.
        expect(await t.log.list({ before: 'evt_notinthelog0000' })).toEqual([]);
        await other.close();
        await t.log.close();
      } finally {
        await t.cleanup();
      }
    });

    it('filters by type (the type or under it, with `_` and `.` literal), since (inclusive) and limit', async () => {
      const t = await open();
      try {
        const at = (type: string) => t.log.record({ type, actor });
        await at('enrollment.succeeded');
        t.clock.advance(1000);
        const since = new Date(t.clock.now()).toISOString();
        await at('enrollment');
        await at('enrollments.refused');
        await at('enrollment.refused');
        await at('a_b');
        await at('axb.c');
        t.clock.advance(1000);
        await at('a_b.c');
        const types = async (filter: Parameters<AuditLog['list']>[0]) =>
          (await t.log.list(filter)).map((e) => e.type);
        expect(await types({ type: 'enrollment' })).toEqual([
          'enrollment.refused',
          'enrollment',
          'enrollment.succeeded',
        ]);
        expect(await types({ type: 'enrollment.refused' })).toEqual(['enrollment.refused']);
        expect(await types({ type: 'a_b' })).toEqual(['a_b.c', 'a_b']);
        expect(await types({ type: 'enrollment', since })).toEqual(['enrollment.refused', 'enrollment']);
        expect(await types({ since, limit: 2 })).toEqual(['a_b.c', 'axb.c']);
        expect(await allPages(t.log, 1, { type: 'enrollment' })).toHaveLength(3);
        await t.log.close();
      } finally {
        await t.cleanup();
      }
    });

    it('filters by the security flag, with type and paging', async () => {
      const t = await open();
      try {
        await t.log.record({ type: 'session.replaced', actor, security: true });
        await t.log.record({ type: 'session.connected', actor });
        await t.log.record({ type: 'enrollment.refused', actor, security: true });
        await t.log.record({ type: 'enrollment.refused', actor });
        const types = async (filter: Parameters<AuditLog['list']>[0]) =>
          (await t.log.list(filter)).map((e) => `${e.type}${e.security ? '!' : ''}`);
        expect(await types({ security: true })).toEqual(['enrollment.refused!', 'session.replaced!']);
        expect(await types({ security: false })).toEqual(['enrollment.refused', 'session.connected']);
        expect(await types({ security: true, type: 'session' })).toEqual(['session.replaced!']);
        expect(await allPages(t.log, 1, { security: true })).toHaveLength(2);
        await t.log.close();
      } finally {
        await t.cleanup();
      }
    });

    it('times never go back within a log (a clock stepped back keeps the last time until it catches up)', async () => {
      const t = await open();
      try {
        const first = await t.log.record({ type: 'test.event', actor });
        t.clock.advance(-60_000);
        const second = await t.log.record({ type: 'test.event', actor });
        expect(second.at).toBe(first.at);
        expect((await t.log.list()).map((e) => e.id)).toEqual([second.id, first.id]);
        await t.log.close();
      } finally {
        await t.cleanup();
      }
    });

    it('lazy events are in list() at once and survive close(), in order with the durable ones', async () => {
      const t = await open();
      try {
        const lazy = t.log.record({ type: 'session.connected', actor, connectorId: 'con_a' }, { lazy: true });
        expect((await t.log.list()).map((e) => e.connectorId)).toEqual(['con_a']);
        await lazy;
        void t.log.record({ type: 'session.connected', actor, connectorId: 'con_b' }, { lazy: true });
        const durable = t.log.record({ type: 'group.created', actor });
        void t.log.record({ type: 'session.connected', actor, connectorId: 'con_c' }, { lazy: true });
        await durable;
        await t.log.close();
        const again = await t.reopen();
        expect((await again.list()).map((e) => e.connectorId ?? e.type)).toEqual([
          'con_c',
          'group.created',
          'con_b',
          'con_a',
        ]);
        await again.close();
      } finally {
        await t.cleanup();
      }
    });

    it('refusals are coalesced above the backend: one event, then one summary at list() or close()', async () => {
      const t = await open();
      try {
        const refusal = {
          type: 'enrollment.refused',
          actor: { kind: 'anonymous' } as const,
          outcome: 'refused' as const,
          reason: 'KEY_INVALID',
          remoteAddress: '192.0.2.7',
        };
        for (let i = 0; i < 10; i++) await t.log.recordRefusal(refusal);
        const listed = await t.log.list({ type: 'enrollment.refused' });
        expect(listed.map((e) => e.details.suppressed ?? 1)).toEqual([9, 1]);
        for (let i = 0; i < 4; i++) await t.log.recordRefusal(refusal);
        await t.log.close();
        const again = await t.reopen();
        const all = await again.list({ type: 'enrollment.refused' });
        expect(all.reduce((sum, e) => sum + ((e.details.suppressed as number | undefined) ?? 1), 0)).toBe(14);
        expect(all).toHaveLength(3);
        await again.close();
      } finally {
        await t.cleanup();
      }
    });
  });
}
