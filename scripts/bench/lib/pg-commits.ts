import { PgStore } from '../../../server/store/postgres/pg-store.js';
import { createDatabase } from '../../lib/postgres.js';
import { sampleConnectorRecord } from '../../lib/sample-records.js';
import { monoMs, round } from './stats.js';

export interface CommitRate {
  replicas: number;
  writers: number;
  /** Each transaction an enrollment's shape (a new connector and its key's use count) or a new connector alone. */
  contended: boolean;
  transactions: number;
  perSecond: number;
  commits: number;
  conflicts: number;
}

/**
 * Transactions per second PgStore commits on a fresh database of the cluster at `clusterUrl`, from
 * `replicas` stores and `writers` concurrent writers: the database's own commit rate, the floor
 * under enrollments through replicas (each enrollment is one such transaction).
 */
export async function measureCommits(
  clusterUrl: string,
  options: { replicas: number; writers: number; contended: boolean; transactions: number },
): Promise<CommitRate> {
  const { replicas, writers, contended, transactions } = options;
  await using db = await createDatabase(clusterUrl, 'ce_bench_commits');
  const stores = await Promise.all(Array.from({ length: replicas }, () => PgStore.open(db.url)));
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
    // Every store sees the key before the clock starts (bounded: 10 s).
    const seenBy = monoMs() + 10_000;
    for (const store of stores)
      while (!store.read((v) => v.get('provisioningKeys', 'k'))) {
        if (monoMs() > seenBy) throw new Error('measureCommits: a store never saw the key');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    const t0 = monoMs();
    let next = 0;
    await Promise.all(
      Array.from({ length: writers }, async (_, writer) => {
        const store = stores[writer % replicas]!;
        while (next < transactions) {
          const i = next++;
          await store.transact((tx) => {
            tx.put('connectors', sampleConnectorRecord(`c${i}`));
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
    return {
      replicas,
      writers,
      contended,
      transactions,
      perSecond: round(transactions / seconds, 0),
      commits: sum('commits'),
      conflicts: sum('conflicts'),
    };
  } finally {
    for (const store of stores) await store.close();
  }
}
