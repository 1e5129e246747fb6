import { PgStore } from '../server/store/postgres/pg-store.js';
import { freshDatabase, sharedClusterUrl, withClient } from './helpers/postgres.js';
import { describeStoreContract } from './helpers/store-contract.js';

/**
 * The store contract on PostgreSQL. Writes fail the way a lost database does: the test's database
 * stops taking connections and every connection to it is ended, until it is healed.
 */
describeStoreContract('PgStore', async () => {
  const db = await freshDatabase();
  const name = new URL(db.url).pathname.slice(1);
  const admin = (sql: string) => withClient(sharedClusterUrl(), (c) => c.query(sql));
  return {
    store: await PgStore.open(db.url, { pollMs: 200 }),
    breakWrites: async () => {
      await admin(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
      await admin(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}' AND pid <> pg_backend_pid()`,
      );
    },
    healWrites: async () => {
      await admin(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
    },
    reopen: () => PgStore.open(db.url, { pollMs: 200 }),
    syncs: null,
    cleanup: async () => {
      await admin(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
      await db[Symbol.asyncDispose]();
    },
  };
});
