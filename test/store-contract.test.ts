import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { JournalStore } from '../server/store/journal-store.js';
import { MemoryStore } from '../server/store/memory-store.js';
import { emptyData, type StoreData } from '../server/store/records.js';
import type { Store } from '../server/store/store.js';
import { tempDir } from './helpers/server.js';
import { describeStoreContract } from './helpers/store-contract.js';
import { SyncLog } from './helpers/sync-log.js';

describeStoreContract('MemoryStore', async () => {
  const store = new MemoryStore();
  /** What a restart would see: the committed state (a memory store's is its state). */
  const committed = (from: Store): StoreData => {
    const data = emptyData();
    const snapshot = from.snapshot();
    for (const [section, records] of snapshot.sections)
      for (const record of records)
        (data[section] as Record<string, object>)[(record as { id: string }).id] = record;
    snapshot.release();
    return data;
  };
  return {
    store,
    breakWrites: async () => {
      store.failWrites = true;
    },
    healWrites: async () => {
      store.failWrites = false;
    },
    reopen: async () => new MemoryStore(committed(store)),
    syncs: null,
    cleanup: async () => {},
  };
});

describeStoreContract('JournalStore', async () => {
  const dir = await tempDir();
  // The data dir is removed to make writes fail: the store's own folder, inside the temp dir.
  const dataDir = join(dir, 'data');
  await mkdir(dataDir);
  const file = join(dataDir, 'store.json');
  const syncs = new SyncLog();
  return {
    store: await JournalStore.open(file, { sync: syncs }),
    breakWrites: () => rm(dataDir, { recursive: true }),
    healWrites: () => mkdir(dataDir).then(() => {}),
    reopen: () => JournalStore.open(file),
    syncs,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
