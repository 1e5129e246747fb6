import { existsSync } from 'node:fs';
import { readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { enrollSim } from './helpers/agent-sim.js';
import { spawnTs } from './helpers/processes.js';
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
