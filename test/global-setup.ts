import { buildConsole } from '../scripts/build-console.js';
import { type PostgresCluster, startPostgres } from './helpers/postgres.js';

/**
 * The admin console's build, and one PostgreSQL for the whole test run (each test makes its own database in it), unless
 * CONNECTOR_TEST_DATABASE_URL names one already. Test files inherit the variable.
 */
let cluster: PostgresCluster | undefined;

export async function setup(): Promise<void> {
  // The admin console, built once per run when web/ changed (the browser tests load it).
  await buildConsole({ ifStale: true });
  if (process.env.CONNECTOR_TEST_DATABASE_URL) return;
  cluster = await startPostgres();
  process.env.CONNECTOR_TEST_DATABASE_URL = cluster.url;
}

export async function teardown(): Promise<void> {
  await cluster?.[Symbol.asyncDispose]();
}
