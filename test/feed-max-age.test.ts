import { describe, expect, it } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { parseServeConfig } from '../server/config.js';
import { freshDatabase, withClient } from './helpers/postgres.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import type { TestServer } from './helpers/server.js';

const URL = 'postgres://u:p@127.0.0.1:5432/d';
const MINUTE_MS = 60_000;

describe('how long the change feed keeps unread changes (--feed-max-age)', () => {
  it('a silent reader holds changes back only that long: with 20m, its rows go after 30 minutes (1h would keep them)', async () => {
    await using db = await freshDatabase();
    const clock = new ManualClock(Date.now());
    const replicas = await startReplicas(db.url, 1, { clock, config: { feedMaxAgeMs: 20 * MINUTE_MS } });
    try {
      const [a] = replicas as [TestServer];
      await a.admin.groups.create.mutate({ name: 'Kept back' });
      const rows = () =>
        withClient(db.url, async (c) =>
          Number((await c.query('SELECT count(*) FROM store_changes')).rows[0].count),
        );
      expect(await rows()).toBeGreaterThan(0);
      // A replica that read nothing and went silent now (killed, cut off): read by all, the rows
      // would go after 10 minutes; unread, they wait for the maximum age.
      await withClient(db.url, (c) =>
        c.query(
          `INSERT INTO store_feed_readers (origin, read_xmin, heartbeat_at) VALUES ('silent', '1'::xid8, $1)`,
          [clock.now()],
        ),
      );
      clock.advance(30 * MINUTE_MS);
      // The replica's upkeep (every 5 s) finds a prune due: under the default hour the silent reader
      // (30 minutes old) would still hold every row back.
      await expect.poll(rows, { timeout: 12_000, interval: 200 }).toBe(0);
      const readers = await withClient(db.url, async (c) =>
        (await c.query('SELECT origin FROM store_feed_readers')).rows.map((r) => r.origin),
      );
      expect(readers).not.toContain('silent');
    } finally {
      await stopAll(replicas);
    }
  });

  it('takes 5m to 7d, defaults to an hour, and is refused without --database-url', () => {
    const env = {};
    expect(parseServeConfig({ databaseUrl: URL }, env).feedMaxAgeMs).toBe(60 * MINUTE_MS);
    expect(parseServeConfig({ databaseUrl: URL, feedMaxAge: '6h' }, env).feedMaxAgeMs).toBe(360 * MINUTE_MS);
    expect(parseServeConfig({ databaseUrl: URL }, { CONNECTOR_FEED_MAX_AGE: '5m' }).feedMaxAgeMs).toBe(
      5 * MINUTE_MS,
    );
    for (const text of ['4m', '8d'])
      expect(() => parseServeConfig({ databaseUrl: URL, feedMaxAge: text }, env)).toThrow(
        `--feed-max-age: "${text}" is outside 5m..7d (how long a replica may be away and still catch up from the feed)`,
      );
    expect(() => parseServeConfig({ databaseUrl: URL, feedMaxAge: 'soon' }, env)).toThrow(
      /--feed-max-age: "soon" is not a duration/,
    );
    expect(() => parseServeConfig({ feedMaxAge: '2h' }, env)).toThrow(
      '--feed-max-age goes with --database-url (the change feed between replicas)',
    );
  });
});
