import { describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { parseServeConfig } from '../server/config.js';
import { DEFAULT_AUDIT_RETENTION_MS } from '../server/services/audit-retention.js';
import { DAY_MS } from '../shared/durations.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';

const URL = 'postgres://u:p@127.0.0.1:5432/d';

describe('audit retention on PostgreSQL (--audit-retention)', () => {
  it('replicas remove events older than the retention on their schedule, one of them doing the work, and record it', async () => {
    await using db = await freshDatabase();
    const clock = new ManualClock(Date.now());
    // Each replica runs retention every 100 ms of real time; what is old is judged by the test's clock.
    const replicas = await startReplicas(db.url, 2, {
      clock,
      config: { auditRetentionMs: 10 * DAY_MS, auditPruneIntervalMs: 100 },
    });
    try {
      const [a, b] = replicas as [(typeof replicas)[0], (typeof replicas)[0]];
      for (const name of ['Old one', 'Old two', 'Old three']) await a.admin.groups.create.mutate({ name });
      const old = await a.admin.audit.list.query({ limit: 1000 });
      expect(old.filter((e) => e.type === 'group.created')).toHaveLength(3);

      clock.advance(9 * DAY_MS);
      await b.admin.groups.create.mutate({ name: 'Recent' });
      clock.advance(2 * DAY_MS); // the first events are 11 days old now, the last one 2 days
      await vi.waitFor(
        async () => {
          const events = await b.admin.audit.list.query({ limit: 1000 });
          expect(events.find((e) => e.type === 'audit.pruned')).toBeDefined();
        },
        { timeout: 15_000, interval: 100 },
      );
      const left = await a.admin.audit.list.query({ limit: 1000 });
      const oldIds = new Set(old.map((e) => e.id));
      expect(left.filter((e) => oldIds.has(e.id))).toEqual([]);
      expect(left.filter((e) => e.type === 'group.created').map((e) => e.details.name)).toEqual(['Recent']);
      // One replica removed them; the other, skipping or finding nothing, recorded nothing.
      const pruned = left.filter((e) => e.type === 'audit.pruned');
      expect(pruned).toHaveLength(1);
      expect(pruned[0]).toMatchObject({
        actor: { kind: 'system' },
        details: { removed: old.length, retentionMs: 10 * DAY_MS },
      });
      expect(Date.parse(pruned[0]!.details.before as string)).toBe(Date.parse(pruned[0]!.at) - 10 * DAY_MS);
    } finally {
      await stopAll(replicas);
    }
  });

  it('takes a duration of a day or more, or forever; defaults to 400 days; refused without --database-url', () => {
    const env = {};
    expect(parseServeConfig({ databaseUrl: URL }, env).auditRetentionMs).toBe(DEFAULT_AUDIT_RETENTION_MS);
    expect(DEFAULT_AUDIT_RETENTION_MS).toBe(400 * DAY_MS);
    expect(parseServeConfig({ databaseUrl: URL, auditRetention: '90d' }, env).auditRetentionMs).toBe(
      90 * DAY_MS,
    );
    expect(
      parseServeConfig({ databaseUrl: URL }, { CONNECTOR_AUDIT_RETENTION: 'forever' }).auditRetentionMs,
    ).toBeNull();
    expect(() => parseServeConfig({ databaseUrl: URL, auditRetention: '6m' }, env)).toThrow(
      '--audit-retention: "6m" is under a day (m is minutes): use days, e.g. 400d, or forever',
    );
    expect(() => parseServeConfig({ databaseUrl: URL, auditRetention: 'soon' }, env)).toThrow(
      /--audit-retention: "soon" is not a duration/,
    );
    expect(() => parseServeConfig({ auditRetention: '90d' }, env)).toThrow(
      '--audit-retention goes with --database-url (the audit table); a server without a database rotates audit.jsonl by size: use --audit-max-bytes and --audit-keep',
    );
    // And the other way round: the file's rotation settings did nothing with a database.
    expect(() => parseServeConfig({ databaseUrl: URL, auditMaxBytes: '1MiB' }, env)).toThrow(
      '--audit-max-bytes goes with a server without --database-url (it rotates audit.jsonl); with --database-url the audit log is a table: bound it with --audit-retention',
    );
    expect(() => parseServeConfig({ databaseUrl: URL }, { CONNECTOR_AUDIT_KEEP: '3' })).toThrow(
      /^CONNECTOR_AUDIT_KEEP goes with a server without --database-url/,
    );
    // Their defaults are no setting: a replica starts without them.
    expect(parseServeConfig({ databaseUrl: URL }, env).databaseUrl).toBe(URL);
  });
});
