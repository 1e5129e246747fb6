import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { ChangeFeed } from '../server/store/postgres/change-feed.js';
import {
  type ChangeRow,
  currentPosition,
  positionAt,
  readChanges,
} from '../server/store/postgres/changes.js';
import { commitChange, WriteConflict } from '../server/store/postgres/commit.js';
import { migrateToLatest } from '../server/store/postgres/migrate.js';
import { freshDatabase, type TestDatabase, testPool, withClient } from './helpers/postgres.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function database(): Promise<TestDatabase> {
  const db = await freshDatabase();
  cleanups.push(() => db[Symbol.asyncDispose]());
  await withClient(db.url, migrateToLatest);
  return db;
}

function pool(url: string): pg.Pool {
  const p = testPool(url, 8);
  p.on('error', () => {});
  cleanups.push(() => p.end());
  return p;
}

async function follow(url: string, options: { pollMs?: number } = {}) {
  const p = pool(url);
  const rows: ChangeRow[] = [];
  const feed = new ChangeFeed({
    pool: p,
    connectionString: url,
    from: await currentPosition(p),
    onChanges: (batch) => rows.push(...batch),
    pollMs: options.pollMs ?? 200,
  });
  await feed.start();
  cleanups.push(() => feed.stop());
  return { feed, rows, pool: p };
}

async function versionOf(p: pg.Pool, id: string): Promise<{ version: number; value: number }> {
  const found = await p.query(
    `SELECT version, body FROM store_records WHERE section = 'groups' AND id = $1`,
    [id],
  );
  if (found.rowCount === 0) return { version: 0, value: 0 };
  return { version: Number(found.rows[0].version), value: found.rows[0].body.value };
}

/** Adds one to a counter record, retrying on conflicts (each attempt reads the version it relies on). */
async function increment(p: pg.Pool, origin: string, id: string): Promise<number> {
  for (let attempt = 1; attempt <= 200; attempt++) {
    const seen = await versionOf(p, id);
    try {
      await commitChange(p, {
        origin,
        reads: [{ section: 'groups', id, version: seen.version }],
        writes: [{ section: 'groups', id, body: { value: seen.value + 1 } }],
      });
      return attempt;
    } catch (error) {
      if (!(error instanceof WriteConflict)) throw error;
    }
  }
  throw new Error('no commit in 200 attempts');
}

async function until(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('PostgreSQL change feed and optimistic commits', () => {
  it('16 writers on 3 replicas: no update lost, every replica hands over every change exactly once', async () => {
    const db = await database();
    const replicas = await Promise.all([1, 2, 3].map(() => follow(db.url)));
    const counters = ['c0', 'c1', 'c2', 'c3'];
    const perWriter = 25;
    let retries = 0;
    await Promise.all(
      Array.from({ length: 16 }, async (_, writer) => {
        const replica = replicas[writer % 3] as (typeof replicas)[number];
        for (let i = 0; i < perWriter; i++) {
          retries +=
            (await increment(replica.pool, `r${writer % 3}`, counters[(writer + i) % 4] as string)) - 1;
        }
      }),
    );
    const total = 16 * perWriter;
    const first = replicas[0] as (typeof replicas)[number];
    for (const id of counters) expect((await versionOf(first.pool, id)).value).toBe(total / 4);
    expect(retries).toBeGreaterThan(0); // the writers did collide: the check was exercised
    for (const replica of replicas) {
      await replica.feed.readNow();
      await until(() => replica.rows.length >= total);
      const seqs = replica.rows.map((row) => row.seq);
      expect(new Set(seqs).size).toBe(total);
      expect(seqs.length).toBe(total);
      // Applying the ops by version gives every replica the database's final values.
      const latest = new Map<string, { version: number; value: number }>();
      for (const op of replica.rows.flatMap((row) => row.ops)) {
        const known = latest.get(op.id);
        if (!known || op.version > known.version)
          latest.set(op.id, { version: op.version, value: (op.body as { value: number }).value });
      }
      for (const id of counters) expect(latest.get(id)?.value).toBe(total / 4);
    }
  });

  it('a transaction whose read changed meanwhile is refused; one whose scanned section changed is refused too', async () => {
    const db = await database();
    const p = pool(db.url);
    await commitChange(p, {
      origin: 'a',
      reads: [],
      writes: [{ section: 'groups', id: 'g', body: { value: 1 } }],
    });
    const view = await currentPosition(p);
    await commitChange(p, {
      origin: 'a',
      reads: [{ section: 'groups', id: 'g', version: 1 }],
      writes: [{ section: 'groups', id: 'g', body: { value: 2 } }],
    });
    await expect(
      commitChange(p, {
        origin: 'b',
        reads: [{ section: 'groups', id: 'g', version: 1 }],
        writes: [{ section: 'groups', id: 'g', body: { value: 9 } }],
      }),
    ).rejects.toBeInstanceOf(WriteConflict);
    // Two creations of one id: the second finds it there.
    await expect(
      commitChange(p, {
        origin: 'b',
        reads: [{ section: 'groups', id: 'g', version: 0 }],
        writes: [{ section: 'groups', id: 'g', body: { value: 9 } }],
      }),
    ).rejects.toBeInstanceOf(WriteConflict);
    // A scan of groups from before the second write conflicts; a scan of connectors does not.
    const write = { section: 'apiKeys' as const, id: 'k', body: { value: 1 } };
    await expect(
      commitChange(p, {
        origin: 'b',
        reads: [],
        writes: [write],
        scans: { sections: ['groups'], since: view },
      }),
    ).rejects.toBeInstanceOf(WriteConflict);
    await commitChange(p, {
      origin: 'b',
      reads: [],
      writes: [write],
      scans: { sections: ['connectors'], since: view },
    });
    expect((await versionOf(p, 'g')).value).toBe(2);
  });

  it('of two commits that each checked a section empty and then wrote to it, exactly one commits', async () => {
    // Write skew: replicas starting together each find no admin key and make one. Both checks run
    // before either insert commits unless such commits are serialized.
    const db = await database();
    const p = pool(db.url);
    for (let round = 0; round < 40; round++) {
      const since = await currentPosition(p);
      const attempt = (origin: string) =>
        commitChange(p, {
          origin,
          reads: [],
          writes: [{ section: 'apiKeys', id: `${origin}-${round}`, body: { value: round } }],
          scans: { sections: ['apiKeys'], since },
        }).then(
          () => 'committed',
          (error: unknown) => (error instanceof WriteConflict ? 'conflict' : Promise.reject(error)),
        );
      const outcomes = await Promise.all([attempt('a'), attempt('b')]);
      expect(outcomes.sort(), `round ${round}`).toEqual(['committed', 'conflict']);
    }
  });

  it("a commit whose connection dies between its statements fails, and the process goes on (the error is the commit's)", async () => {
    // pg emits 'error' on a client whose connection ends while no statement runs on it; the pool
    // listens only on idle clients. A commit that catches up inside its transaction (the `alone`
    // path) leaves its client idle meanwhile: unheard, the error ended the process.
    const db = await database();
    const p = pool(db.url);
    const attempt = commitChange(p, async () => {
      await withClient(db.url, (c) =>
        c.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND state = 'idle in transaction'`,
        ),
      );
      // The termination reaches the idle client as an 'error' event before the next statement.
      await new Promise((resolve) => setTimeout(resolve, 200));
      return { origin: 'cut', reads: [], writes: [{ section: 'connectors', id: 'cut', body: {} }] };
    });
    await expect(attempt).rejects.toThrow();
    // The pool did not keep the dead client: the next commit goes through.
    await commitChange(p, {
      origin: 'next',
      reads: [],
      writes: [{ section: 'connectors', id: 'ok', body: {} }],
    });
    const rows = await withClient(db.url, (c) => c.query(`SELECT id FROM store_records ORDER BY id`));
    expect(rows.rows.map((r) => r.id)).toEqual(['ok']);
  });

  it('a change whose transaction took its number first but committed last is not skipped', async () => {
    const db = await database();
    const replica = await follow(db.url, { pollMs: 600_000 });
    const writer = pool(db.url);
    const early = await writer.connect();
    try {
      await early.query('BEGIN');
      await early.query(
        `INSERT INTO store_changes (origin, sections, ops) VALUES ('early', '{connectors}', '[{"section":"connectors","id":"e","body":{},"version":1}]')`,
      );
      await commitChange(writer, {
        origin: 'late',
        reads: [],
        writes: [{ section: 'connectors', id: 'l', body: {} }],
      });
      await replica.feed.readNow();
      expect(replica.rows.map((row) => row.origin)).toEqual(['late']);
      await early.query('COMMIT');
    } finally {
      early.release();
    }
    await replica.feed.readNow();
    expect(replica.rows.map((row) => row.origin)).toEqual(['late', 'early']);
    await replica.feed.readNow();
    expect(replica.rows).toHaveLength(2);
  });

  it("a reader's own rows come with their deletions only; another replica's whole, propagated touches included", async () => {
    const db = await database();
    const writer = pool(db.url);
    const from = await currentPosition(writer);
    await commitChange(writer, {
      origin: 'a',
      reads: [],
      writes: [
        { section: 'connectors', id: 'kept', body: { name: 'kept' } },
        { section: 'connectors', id: 'gone', body: { name: 'gone' } },
      ],
    });
    const deleted = await commitChange(writer, {
      origin: 'a',
      reads: [],
      writes: [{ section: 'connectors', id: 'gone', body: null }],
    });
    const { rows } = await writer.query(`SELECT version FROM store_records WHERE id = 'kept'`);
    const touched = await commitChange(writer, {
      origin: 'b',
      reads: [],
      writes: [],
      touches: [
        {
          section: 'connectors',
          id: 'kept',
          fields: { lastConnectedAt: 5 },
          removed: [],
          propagate: true,
          version: Number(rows[0].version),
        },
      ],
    });
    // The writer of a touch holds the record: it gets its key back, not its body.
    expect(touched.touched).toEqual([['connectors', 'kept']]);
    expect(touched.ops).toEqual([]);

    const asA = await readChanges(writer, from, 'a');
    expect(asA.rows.map((row) => [row.origin, row.ops])).toEqual([
      ['a', []],
      ['a', [{ section: 'connectors', id: 'gone', body: null, version: deleted.seq }]],
      [
        'b',
        [
          {
            section: 'connectors',
            id: 'kept',
            body: { name: 'kept', lastConnectedAt: 5 },
            version: touched.seq,
          },
        ],
      ],
    ]);
    const asC = await readChanges(writer, from, 'c');
    expect(asC.rows.map((row) => row.ops.length)).toEqual([2, 1, 1]);
  });

  it('a replica whose listener connection is killed just before a change still gets it (catch-up on reconnect)', async () => {
    const db = await database();
    // Polling far apart: only the reconnect's catch-up read can deliver the change in time.
    const replica = await follow(db.url, { pollMs: 600_000 });
    const writer = pool(db.url);
    const pid = replica.feed.listenerPid;
    expect(pid).toBeTypeOf('number');
    await withClient(db.url, (c) => c.query('SELECT pg_terminate_backend($1)', [pid]));
    await commitChange(writer, {
      origin: 'a',
      reads: [],
      writes: [{ section: 'connectors', id: 'x', body: { status: 'revoked' } }],
    });
    await until(() => replica.rows.length === 1, 10_000);
    expect(replica.rows[0]?.ops[0]).toMatchObject({ id: 'x', body: { status: 'revoked' }, version: 1 });
    expect(replica.feed.listening).toBe(true);
  });

  it('a first read that reaches another PostgreSQL server than the load did (a failover in between) is a gap', async () => {
    const db = await database();
    const p = pool(db.url);
    const started = (await p.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t')).rows[0]!.t;
    await increment(p, 'writer', 'g1');
    const feedOf = async (serverStartedAt: string) => {
      const gaps: number[] = [];
      const rows: ChangeRow[] = [];
      const feed = new ChangeFeed({
        pool: p,
        connectionString: db.url,
        from: positionAt('0'),
        horizon: '0',
        serverStartedAt,
        onChanges: (batch) => rows.push(...batch),
        onGap: () => gaps.push(1),
        pollMs: 3_600_000,
      });
      await feed.start();
      cleanups.push(() => feed.stop());
      return { feed, gaps, rows };
    };
    // Loaded on a server that started at another time: its position means nothing on this one.
    const elsewhere = await feedOf('2000-01-01 00:00:00+00');
    expect(elsewhere.gaps.length).toBe(1);
    expect(elsewhere.feed.gapped).toBe(true);
    expect(elsewhere.feed.gapReason).toMatch(/restarted or failed over/);
    expect(elsewhere.rows).toEqual([]);
    // Loaded on this very server: its first read goes on from the position.
    const here = await feedOf(started);
    expect(here.gaps).toEqual([]);
    expect(here.rows.map((r) => r.origin)).toEqual(['writer']);
  });
});
