import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { enrollSim } from './helpers/agent-sim.js';
import { spawnServer, spawnTs } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/**
 * A data dir that has served but lost its store.json (deleted, or moved away after it was damaged,
 * as an older message advised) used to start empty: every agent then met CONNECTOR_NOT_FOUND and
 * wiped its identity. Found by an operator trying day-2 faults.
 */
describe('a data dir whose store is gone', () => {
  it('is refused in one line naming what is left and what to do, and nothing is made or changed', async () => {
    const dataDir = await tempDir('ce-lost-store-');
    const server = await startTestServer({ dataDir });
    const group = await server.admin.groups.create.mutate({ name: 'Kept' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    expect((await enrollSim(server.url, key, 'kept-1')).ok).toBe(true);
    await server.stop();
    await rename(join(dataDir, 'store.json'), join(dataDir, '..', 'store.json.aside'));
    const before = (await readdir(dataDir)).sort();

    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    expect((await serve.exited).code).toBe(1);
    const said = serve.output().trim();
    expect(said.split('\n')).toHaveLength(1);
    expect(said).toContain(
      `cannot start: ${join(dataDir, 'store.json')}: is missing, while the data dir still holds signing-keys.json`,
    );
    expect(said).toContain('every enrolled connector unknown (their agents would wipe their identities)');
    expect(said).toContain('connector-server restore --from <backup>');
    expect((await readdir(dataDir)).sort()).toEqual(before);
    expect(existsSync(join(dataDir, 'store.json'))).toBe(false);

    // Put back, it serves what it had.
    await rename(join(dataDir, '..', 'store.json.aside'), join(dataDir, 'store.json'));
    await using again = await startTestServer({ dataDir });
    expect((await again.admin.groups.list.query({})).map((g) => g.name)).toEqual(['Kept']);
  });

  it('a damaged store.json says to restore a backup, not to move it away', async () => {
    const dataDir = await tempDir('ce-torn-store-');
    const server = await startTestServer({ dataDir });
    await server.stop();
    await writeFile(join(dataDir, 'store.json'), '{"schemaVersion":1,"groups":{');
    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    expect((await serve.exited).code).toBe(1);
    expect(serve.output()).toContain('is not valid JSON');
    expect(serve.output()).toContain('restore the data dir from a backup');
    expect(serve.output()).not.toMatch(/or move it away/);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('a new, empty data dir still starts', async () => {
    await using server = await startTestServer({ dataDir: join(await tempDir('ce-new-dir-'), 'data') });
    expect(await server.admin.groups.list.query({})).toEqual([]);
  });
});

describe('a data dir whose signing keys are gone', () => {
  it('is refused while the store holds connectors, instead of a new key every identity is unknown to', async () => {
    const dataDir = await tempDir('ce-lost-keys-');
    const server = await startTestServer({ dataDir });
    const group = await server.admin.groups.create.mutate({ name: 'Signed' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    await enrollSim(server.url, key, 'signed-1');
    await server.stop();
    await rename(join(dataDir, 'signing-keys.json'), join(dataDir, 'signing-keys.json.aside'));
    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    expect((await serve.exited).code).toBe(1);
    expect(serve.output()).toContain(
      `cannot start: ${join(dataDir, 'signing-keys.json')}: is missing, while the store holds 1 connector(s) with identities its keys signed`,
    );
    expect(existsSync(join(dataDir, 'signing-keys.json'))).toBe(false);
    await rename(join(dataDir, 'signing-keys.json.aside'), join(dataDir, 'signing-keys.json'));
    await using again = await startTestServer({ dataDir });
    expect((await again.admin.connectors.counts.query({})).total).toBe(1);
  });
});

describe('a journal whose last entry is bad', () => {
  it('torn (no newline: a crash mid-append) is cut off with a warning; damaged but whole is refused in one line that gives the exact cut, which then starts', async () => {
    const dataDir = await tempDir('ce-bad-journal-');
    const journal = join(dataDir, 'store.journal');
    // Killed, not stopped: a stop folds the journal into store.json.
    const writer = await spawnServer(dataDir);
    const admin = createAdminClient({ url: writer.url, adminKey: writer.adminKey });
    for (const name of ['Kept', 'Journalled']) await admin.groups.create.mutate({ name });
    writer.kill('SIGKILL');
    await writer.exited;
    const good = (await readFile(journal)).length;
    expect(good).toBeGreaterThan(0);

    await appendFile(journal, '{"ops":[["groups","grp_torn",{"id":"grp_to');
    const torn = await spawnServer(dataDir);
    await torn.waitForOutput(/the journal ended in a torn entry/);
    torn.kill('SIGKILL');
    await torn.exited;
    expect((await readFile(journal)).length).toBe(good);

    // Whole but unreadable: a crash that left the line's end but not its middle, or a bad disk.
    await appendFile(journal, '{"ops":[["groups","grp_bad",{"id":"\u0000\u0000\u0000\n');
    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    expect((await serve.exited).code).toBe(1);
    const said = serve.output().trim();
    expect(said.split('\n')).toHaveLength(1);
    expect(said).toContain(`${journal}: has a damaged last entry at byte ${good}`);
    expect(said).toContain(`truncate -s ${good} ${journal}`);
    execFileSync('truncate', ['-s', String(good), journal]);
    await using again = await startTestServer({ dataDir });
    expect((await again.admin.groups.list.query({})).map((g) => g.name).sort()).toEqual([
      'Journalled',
      'Kept',
    ]);
    await rm(dataDir, { recursive: true, force: true });
  });
});
