/**
 * Commit throughput of PgStore: transactions per second resolved (= committed) from one and from
 * three replicas on one PostgreSQL, serial and with 16 concurrent writers, each transaction an
 * enrollment's shape (a new connector and a key's use count: `contended`) or a new connector alone
 * (`disjoint`). The replicas phase of `npm run bench` measures the first contended case as its floor.
 *
 *   npx tsx scripts/bench/pg-store-commits.ts [transactions=2000]
 *
 * Uses CONNECTOR_TEST_DATABASE_URL when set, else starts a PostgreSQL of its own (as the tests do).
 */
import { startPostgres } from '../lib/postgres.js';
import { measureCommits } from './lib/pg-commits.js';

const total = Number(process.argv[2] ?? 2000);
const cluster = process.env.CONNECTOR_TEST_DATABASE_URL ? undefined : await startPostgres();
const clusterUrl = process.env.CONNECTOR_TEST_DATABASE_URL ?? cluster!.url;

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
  const r = await measureCommits(clusterUrl, { replicas, writers, contended, transactions: total });
  process.stdout.write(
    `| ${replicas} | ${writers} | ${contended ? 'contended' : 'disjoint'} | ${r.perSecond} | ${r.commits} | ${r.conflicts} |\n`,
  );
}
await cluster?.[Symbol.asyncDispose]();
