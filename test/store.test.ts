import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataFileError } from '../server/store/data-file.js';
import { journalFileOf, loadStoreFiles } from '../server/store/journal.js';
import { JournalStore } from '../server/store/journal-store.js';
import type { GroupRecord } from '../server/store/records.js';
import { writeFileDurably } from '../shared/private-files.js';
import { tempDir } from './helpers/server.js';
import { groupRecord as group } from './helpers/store-contract.js';
import { SyncLog } from './helpers/sync-log.js';

function tryMount(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('JournalStore', () => {
  it('group-commits: 500 concurrent transactions take a handful of writes, and each resolves only after its write', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const store = await JournalStore.open(file);
    const before = store.stats.writes;
    const done = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        store
          .transact((tx) => {
            tx.put('groups', group(`g${i}`));
            return i;
          })
          .then(async (i) => {
            // Durable on resolve: the file already holds this change.
            const onDisk = loadStoreFiles(file)!;
            return Boolean(onDisk.groups[`g${i}`]);
          }),
      ),
    );
    expect(done.every(Boolean)).toBe(true);
    const writes = store.stats.writes - before;
    expect(writes).toBeGreaterThanOrEqual(1);
    expect(writes).toBeLessThanOrEqual(5);
    await store.close();
    await rm(dir, { recursive: true });
  });

  it('refuses to open a corrupt or truncated file, naming it, and does not overwrite it', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    for (const content of [
      '{"schemaVersion":1,"groups":{',
      '',
      'null',
      '{"schemaVersion":2}',
      '{"schemaVersion":1,"groups":[]}',
    ]) {
      await writeFile(file, content);
      const error = await JournalStore.open(file).catch((e: unknown) => e);
      expect(error, content).toBeInstanceOf(DataFileError);
      expect((error as Error).message).toContain(file);
      expect(await readFile(file, 'utf8')).toBe(content);
    }
    await rm(dir, { recursive: true });
  });

  it('fails a write with STORE_UNAVAILABLE, returns to the durable state, and keeps serving reads', async () => {
    const dir = await tempDir();
    const sub = join(dir, 'data');
    await mkdir(sub);
    const store = await JournalStore.open(join(sub, 'store.json'));
    await store.transact((tx) => {
      tx.put('groups', group('kept'));
    });
    await rm(sub, { recursive: true });
    const failing = store.transact((tx) => {
      tx.put('groups', group('lost'));
    });
    const queued = store.transact((tx) => {
      tx.put('groups', group('alsoLost'));
    });
    await expect(failing).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    await expect(queued).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    expect(store.read((v) => v.list('groups').map((g) => g.id))).toEqual(['kept']);
    expect(store.stats.failedWrites).toBeGreaterThan(0);
    await mkdir(sub);
    await store.transact((tx) => {
      tx.put('groups', group('after'));
    });
    expect(Object.keys(JSON.parse(await readFile(join(sub, 'store.json'), 'utf8')).groups)).toEqual([
      'kept',
      'after',
    ]);
    await store.close();
    await rm(dir, { recursive: true });
  });

  it('on a full disk, mutations fail cleanly and the file on disk stays whole', async (ctx) => {
    const dir = await tempDir();
    if (!tryMount(dir, '64k')) {
      ctx.skip(); // needs root and tmpfs; the deleted-folder test above covers the same path
      return;
    }
    try {
      const file = join(dir, 'store.json');
      const store = await JournalStore.open(file);
      await store.transact((tx) => {
        tx.put('groups', group('small'));
      });
      const big = store.transact((tx) => {
        for (let i = 0; i < 400; i++) tx.put('groups', group(`big${i}`));
      });
      await expect(big).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
      expect(store.read((v) => v.list('groups').map((g) => g.id))).toEqual(['small']);
      expect(Object.keys(loadStoreFiles(file)!.groups)).toEqual(['small']);
      await store.close();
    } finally {
      execFileSync('umount', [dir]);
      await rm(dir, { recursive: true });
    }
  });
  it('a disk full at shutdown: folding the journal into the data file fails, which is told apart from a failed write, and the next start has every change', async (ctx) => {
    const dir = await tempDir();
    if (!tryMount(dir, '64k')) {
      ctx.skip(); // needs root and tmpfs
      return;
    }
    try {
      const file = join(dir, 'store.json');
      const writeErrors: unknown[] = [];
      const foldErrors: unknown[] = [];
      const store = await JournalStore.open(file, {
        onWriteError: (e) => writeErrors.push(e),
        onFoldError: (e) => foldErrors.push(e),
      });
      await store.transact((tx) => {
        for (let i = 0; i < 40; i++) tx.put('groups', group(`kept${i}`));
      });
      // What is left is too little for a new store.json beside the old one.
      await writeFile(join(dir, 'ballast'), Buffer.alloc(64 * 1024)).catch(() => {});
      await store.close();
      expect(foldErrors).toHaveLength(1);
      expect(foldErrors[0]).toMatchObject({ code: 'ENOSPC' });
      expect(writeErrors).toEqual([]);
      await rm(join(dir, 'ballast'));
      const again = await JournalStore.open(file);
      expect(again.read((v) => v.list('groups').length)).toBe(40);
      await again.close();
    } finally {
      execFileSync('umount', [dir]);
      await rm(dir, { recursive: true });
    }
  });
});

describe('JournalStore journal', () => {
  it('commits append the changed records to the journal; the data file is not rewritten per commit', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const store = await JournalStore.open(file);
    const before = await readFile(file, 'utf8');
    await store.transact((tx) => {
      tx.put('groups', group('g1'));
    });
    await store.transact((tx) => {
      tx.patch('groups', 'g1', { status: 'disabled' });
    });
    expect(await readFile(file, 'utf8')).toBe(before);
    const lines = (await readFile(journalFileOf(file), 'utf8')).trim().split('\n');
    expect(lines.map((l) => JSON.parse(l).ops)).toEqual([
      [['groups', 'g1', group('g1')]],
      [['groups', 'g1', { ...group('g1'), status: 'disabled' }]],
    ]);
    // A crash now (no close): a new store replays the journal and goes on appending to it, without
    // rewriting the data file at start-up; close folds it in.
    const journalBefore = await readFile(journalFileOf(file), 'utf8');
    const again = await JournalStore.open(file);
    expect(again.read((v) => v.get('groups', 'g1')?.status)).toBe('disabled');
    expect(await readFile(file, 'utf8')).toBe(before);
    expect(again.stats.compactions).toBe(0);
    await again.transact((tx) => {
      tx.put('groups', group('g2'));
    });
    expect(await readFile(journalFileOf(file), 'utf8')).toBe(
      `${journalBefore}${JSON.stringify({ ops: [['groups', 'g2', group('g2')]] })}\n`,
    );
    await again.close();
    expect(JSON.parse(await readFile(file, 'utf8')).groups.g1.status).toBe('disabled');
    expect(await readFile(journalFileOf(file), 'utf8')).toBe('');
    await rm(dir, { recursive: true });
  });

  it('drops a torn last journal line (a crash mid-append) and refuses a damaged one in the middle', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const store = await JournalStore.open(file);
    await store.transact((tx) => {
      tx.put('groups', group('kept'));
    });
    const { appendFile, writeFile } = await import('node:fs/promises');
    await appendFile(journalFileOf(file), '{"ops":[["groups","torn",{"id":"to');
    const reopened = await JournalStore.open(file);
    expect(reopened.read((v) => v.list('groups').map((g) => g.id))).toEqual(['kept']);
    // The torn tail is cut off on disk, so the next append starts a line of its own.
    expect((await readFile(journalFileOf(file), 'utf8')).endsWith('}\n')).toBe(true);
    await reopened.transact((tx) => {
      tx.put('groups', group('after'));
    });
    const journal = await readFile(journalFileOf(file), 'utf8');
    await writeFile(journalFileOf(file), `garbage\n${journal}`);
    const error = await JournalStore.open(file).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataFileError);
    expect((error as Error).message).toContain(journalFileOf(file));
    await rm(dir, { recursive: true });
  });

  it('folds the journal into the data file once it passes the threshold', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const store = await JournalStore.open(file, { compactAfterBytes: 2000 });
    for (let i = 0; i < 20; i++) {
      await store.transact((tx) => {
        tx.put('groups', group(`g${i}`));
      });
    }
    expect(store.stats.compactions).toBeGreaterThanOrEqual(2);
    expect((await readFile(journalFileOf(file), 'utf8')).length).toBeLessThan(3000);
    expect(Object.keys(loadStoreFiles(file)!.groups)).toHaveLength(20);
    await store.close();
    expect(await readFile(journalFileOf(file), 'utf8')).toBe('');
    expect(Object.keys(JSON.parse(await readFile(file, 'utf8')).groups)).toHaveLength(20);
    await rm(dir, { recursive: true });
  });

  it('journals only the fields a touch changed, merged on replay; a record a transaction also changed is journalled whole', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const store = await JournalStore.open(file, { lazyFlushMs: 60_000 });
    await store.transact((tx) => {
      tx.put('groups', group('a'));
      tx.put('groups', group('b'));
      tx.put('groups', group('c'));
    });
    const journalLines = async () =>
      (await readFile(journalFileOf(file), 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).ops);
    const linesBefore = (await journalLines()).length;
    store.touch('groups', 'a', { createdAt: 5 });
    store.touch('groups', 'a', { status: 'disabled' });
    store.touch('groups', 'b', { createdAt: 6 });
    store.touch('groups', 'c', { createdAt: 7 });
    // b is also changed by a transaction in the same window; c loses a field (no patch can say that).
    await store.transact((tx) => {
      tx.patch('groups', 'b', { name: 'renamed' });
    });
    store.touch('groups', 'c', { description: undefined } as Partial<GroupRecord>);
    await store.transact(() => {});
    const written = (await journalLines()).slice(linesBefore).flat();
    expect(written).toContainEqual(['groups', 'a', { createdAt: 5, status: 'disabled' }, 1]);
    expect(written).toContainEqual(['groups', 'b', { ...group('b', 'renamed'), createdAt: 6 }]);
    const { description: _gone, ...withoutDescription } = { ...group('c'), createdAt: 7 };
    expect(written).toContainEqual(['groups', 'c', withoutDescription]);
    // Replayed after a crash (no close), the patches land on the records they name.
    expect(loadStoreFiles(file)?.groups).toEqual(
      store.read((v) => Object.fromEntries(v.list('groups').map((g) => [g.id, g]))),
    );
    const reopened = await JournalStore.open(file);
    expect(reopened.read((v) => v.get('groups', 'a'))).toEqual({
      ...group('a'),
      createdAt: 5,
      status: 'disabled',
    });
    await reopened.close();
    await rm(dir, { recursive: true });
  });

  it('lets the journal grow to the size of the data file before rewriting it (each journalled byte costs at most one rewritten byte)', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const store = await JournalStore.open(file, { compactAfterBytes: 1000 });
    // A data file of ~25 KB: 100 groups in one commit (the first commit past 1,000 bytes compacts).
    await store.transact((tx) => {
      for (let i = 0; i < 100; i++) tx.put('groups', group(`big${i}`));
    });
    await store.transact((tx) => {
      tx.put('groups', group('one'));
    });
    const compactionsBefore = store.stats.compactions;
    const dataBytes = (await readFile(file)).length;
    expect(dataBytes).toBeGreaterThan(20_000);
    // ~300 bytes a commit: well past 1,000 bytes of journal, still short of the data file's size.
    for (let i = 0; i < 40; i++) {
      await store.transact((tx) => {
        tx.patch('groups', 'one', { name: `name ${i}` });
      });
    }
    const journalBytes = (await readFile(journalFileOf(file))).length;
    expect(journalBytes).toBeGreaterThan(1000);
    expect(journalBytes).toBeLessThan(dataBytes);
    expect(store.stats.compactions).toBe(compactionsBefore);
    for (let i = 0; i < 200 && store.stats.compactions === compactionsBefore; i++) {
      await store.transact((tx) => {
        tx.patch('groups', 'one', { name: `more ${i}` });
      });
    }
    expect(store.stats.compactions).toBe(compactionsBefore + 1);
    expect(loadStoreFiles(file)?.groups.one?.name).toBe(store.read((v) => v.get('groups', 'one')?.name));
    await store.close();
    await rm(dir, { recursive: true });
  });

  it('returns changed records to their durable values when a commit fails, also those changed again meanwhile', async () => {
    const dir = await tempDir();
    const sub = join(dir, 'data');
    await mkdir(sub);
    const store = await JournalStore.open(join(sub, 'store.json'));
    await store.transact((tx) => {
      tx.put('groups', group('g', 'durable'));
    });
    await rm(sub, { recursive: true });
    const first = store.transact((tx) => {
      tx.patch('groups', 'g', { name: 'first' });
    });
    const second = store.transact((tx) => {
      tx.patch('groups', 'g', { name: 'second' });
      tx.delete('groups', 'g');
      tx.put('groups', group('h'));
    });
    await expect(first).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    await expect(second).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    expect(store.read((v) => Object.fromEntries(v.list('groups').map((g) => [g.id, g])))).toEqual({
      g: group('g', 'durable'),
    });
    await rm(dir, { recursive: true, force: true });
  });

  it('touches are not rolled back by a failed commit, are written by the next one, and a transaction over a touched record still rolls back', async () => {
    const dir = await tempDir();
    const sub = join(dir, 'data');
    await mkdir(sub);
    const file = join(sub, 'store.json');
    const store = await JournalStore.open(file, { lazyFlushMs: 60_000 });
    await store.transact((tx) => {
      tx.put('groups', group('g', 'durable'));
      tx.put('groups', group('t', 'durable'));
    });
    await rm(sub, { recursive: true });
    // A touch alone (last-seen style), then a touch followed by a transaction on the same record.
    store.touch('groups', 't', { createdAt: 1 });
    store.touch('groups', 'g', { createdAt: 2 });
    const failing = store.transact((tx) => {
      tx.patch('groups', 'g', { name: 'lost' });
    });
    await expect(failing).rejects.toMatchObject({ reason: 'STORE_UNAVAILABLE' });
    // The transaction's change is gone; the touches made before it stay in memory.
    expect(store.read((v) => Object.fromEntries(v.list('groups').map((g) => [g.id, g])))).toEqual({
      g: { ...group('g', 'durable'), createdAt: 2 },
      t: { ...group('t', 'durable'), createdAt: 1 },
    });
    await mkdir(sub);
    await store.transact((tx) => {
      tx.put('groups', group('other'));
    });
    // …and the next commit carries them to disk, though nothing touched them again.
    expect(loadStoreFiles(file)?.groups).toMatchObject({
      g: { name: 'durable', createdAt: 2 },
      t: { createdAt: 1 },
    });
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
});

describe('durable writes resolve after their syncs', () => {
  /**
   * Writes `text` through `write` and notes, at each real fsync, what the disk holds then: the
   * order write → sync of the temp file → rename → sync of the folder → resolved.
   */
  async function orderOf(file: string, text: string, write: (syncs: SyncLog) => Promise<unknown>) {
    const syncs = new SyncLog();
    const holds = (path: string) => existsSync(path) && readFileSync(path, 'utf8') === text;
    syncs.onFile = (path) => {
      if (path !== file && holds(path)) syncs.note('written');
      if (holds(file)) syncs.note('renamed');
    };
    syncs.onFolder = () => {
      if (holds(file)) syncs.note('renamed');
    };
    await write(syncs);
    syncs.note('resolved');
    return syncs.entries;
  }

  it('writeFileDurably: the temp file is written and synced, renamed, the folder synced, then it resolves', async () => {
    const dir = await tempDir();
    const file = join(dir, 'secret.key');
    await writeFile(file, 'old');
    const order = await orderOf(file, 'new', (sync) => writeFileDurably(file, 'new', { sync }));
    expect(order).toEqual(['written', 'synced secret.key.tmp', 'renamed', 'synced folder', 'resolved']);
    await rm(dir, { recursive: true });
  });

  it('a commit that rewrites the data file resolves after the rename and the folder are synced', async () => {
    const dir = await tempDir();
    const file = join(dir, 'store.json');
    const syncs = new SyncLog();
    const store = await JournalStore.open(file, { compactAfterBytes: 1, sync: syncs });
    // Commits append to the journal until it outgrows the data file; that one rewrites it whole.
    let order: string[] = [];
    for (let i = 0; i < 20 && store.stats.compactions === 1; i++) {
      const from = syncs.entries.length;
      await store.transact((tx) => tx.put('groups', group(`g${i}`))).then(() => syncs.note('resolved'));
      order = syncs.since(from);
    }
    expect(store.stats.compactions).toBe(2);
    expect(order).toEqual(['synced store.json.tmp', 'synced folder', 'synced store.journal', 'resolved']);
    expect(Object.keys(JSON.parse(readFileSync(file, 'utf8')).groups)).toContain('g1');
    await store.close();
    await rm(dir, { recursive: true });
  });
});
