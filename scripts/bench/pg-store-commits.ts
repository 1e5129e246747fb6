/**
 * Commit throughput of PgStore: transactions per second resolved (= committed) from one and from
 * three replicas on one PostgreSQL, serial and with 16 concurrent writers, each transaction an
 * enrollment's shape (a new connector and a key's use count: `contended`) or a new connector alone
 * (`disjoint`). Evidence for the Replicas section of BENCHMARKS.md.
 *
 *   npx tsx scripts/bench/pg-store-commits.ts [transactions=2000]
 *
 * Uses CONNECTOR_TEST_DATABASE_URL when set, else starts a PostgreSQL of its own (as the tests do).
 */
import { PgStore } from '../../server/store/postgres/pg-store.js';
import { freshDatabase, startPostgres } from '../../test/helpers/postgres.js';
import { connectorRecord } from '../../test/helpers/store-contract.js';
import { monoMs, round } from './lib/stats.js';

const total = Number(process.argv[2] ?? 2000);
const cluster = process.env.CONNECTOR_TEST_DATABASE_URL ? undefined : await startPostgres();
const clusterUrl = process.env.CONNECTOR_TEST_DATABASE_URL ?? cluster!.url;

async function run(replicaCount: number, writers: number, contended: boolean) {
  const db = await freshDatabase(clusterUrl);
  const stores = await Promise.all(Array.from({ length: replicaCount }, () => PgStore.open(db.url)));
  try {
    await stores[0]!.transact((tx) =>
      tx.put('provisioningKeys', {
        id: 'k',
        groupId: 'g',
        hash: 'h',
        encrypted: 'e',
        createdAt: 0,
        expiresAt: Number.MAX_SAFE_INTEGER,
        supersededAt: null,
        lastUsedAt: null,
        maxUses: null,
        uses: 0,
      }),
    );
    for (const store of stores)
      while (!store.read((v) => v.get('provisioningKeys', 'k'))) await new Promise((r) => setTimeout(r, 10));
    const t0 = monoMs();
    let next = 0;
    await Promise.all(
      Array.from({ length: writers }, async (_, writer) => {
        const store = stores[writer % replicaCount]!;
        while (next < total) {
          const i = next++;
          await store.transact((tx) => {
            tx.put('connectors', connectorRecord(`c${i}`));
            if (contended) {
              const key = tx.get('provisioningKeys', 'k')!;
              tx.patch('provisioningKeys', 'k', { uses: (key.uses ?? 0) + 1 });
            }
          });
        }
      }),
    );
    const seconds = (monoMs() - t0) / 1000;
    const sum = (field: 'commits' | 'conflicts') => stores.reduce((n, s) => n + s.stats[field], 0);
    return { perSecond: round(total / seconds, 0), commits: sum('commits'), conflicts: sum('conflicts') };
  } finally {
    for (const store of stores) await store.close();
    await db[Symbol.asyncDispose]();
  }
}

process.stdout.write(
  '| replicas | writers | transactions | tx/s | commits | conflicts |\n| ---: | ---: | --- | ---: | ---: | ---: |\n',
);
for (const [replicas, writers, contended] of [
  [1, 1, false],
  [1, 16, false],
  [1, 16, true],
  [3, 3, false],
  [3, 16, false],
  [3, 16, true],
] as const) {
  const r = await run(replicas, writers, contended);
  process.stdout.write(
    `| ${replicas} | ${writers} | ${contended ? 'contended' : 'disjoint'} | ${r.perSecond} | ${r.commits} | ${r.conflicts} |\n`,
  );
}
await cluster?.[Symbol.asyncDispose]();
