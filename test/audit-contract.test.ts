import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { ManualClock } from '../server/clock.js';
import { FileAuditLog, TableAuditLog } from '../server/services/audit.js';
import { migrateToLatest } from '../server/store/postgres/migrate.js';
import { describeAuditContract } from './helpers/audit-contract.js';
import { freshDatabase, testPool, withClient } from './helpers/postgres.js';
import { tempDir } from './helpers/server.js';

describeAuditContract('FileAuditLog', async () => {
  const dir = await tempDir();
  const file = join(dir, 'audit.jsonl');
  const clock = new ManualClock();
  return {
    log: await FileAuditLog.open(file, clock),
    clock,
    reopen: () => FileAuditLog.open(file, clock),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describeAuditContract('TableAuditLog (PostgreSQL)', async () => {
  const db = await freshDatabase();
  await withClient(db.url, migrateToLatest);
  const clock = new ManualClock();
  const pools: pg.Pool[] = [];
  /** Each log has a pool of its own, as each replica does. */
  const replica = () => {
    const pool = testPool(db.url, 4);
    pools.push(pool);
    return TableAuditLog.create(pool, clock);
  };
  return {
    log: replica(),
    clock,
    reopen: async () => replica(),
    cleanup: async () => {
      await Promise.all(pools.map((p) => p.end()));
      await db[Symbol.asyncDispose]();
    },
  };
});
