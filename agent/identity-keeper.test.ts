import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { IdentityKeeper } from './identity-keeper.js';
import { IdentityStore, type SavedIdentity } from './identity-store.js';
import { lockStateDir } from './state-dir-lock.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

const identity: SavedIdentity = {
  connectorId: 'con_keeper',
  groupId: 'grp_1',
  server: 'http://127.0.0.1:2',
  identityToken: 'token',
  identityExpiresAt: '2027-06-01T00:00:00.000Z',
  privateJwk: { kty: 'OKP', crv: 'Ed25519', x: 'x', d: 'd' },
  enrolledAt: '2026-12-01T00:00:00.000Z',
};

/** A keeper on a real state dir holding `identity`; its log lines; the interval is long unless given. */
async function keeping(checkMs = 3_600_000) {
  const parent = await mkdtemp(join(tmpdir(), 'ce-keeper-'));
  dirs.push(parent);
  const store = new IdentityStore(join(parent, 'state'));
  await store.ensureDir();
  await store.save(identity);
  await store.writeStatus({
    state: 'connected',
    status: 'enabled',
    connectorId: 'con_keeper',
    server: null,
    detail: null,
  });
  const lock = await lockStateDir(store.dir);
  const lines: string[] = [];
  const say = (m: string) => void lines.push(m);
  const keeper = new IdentityKeeper({
    store,
    logger: { warn: say, error: say, info: say },
    current: () => identity,
    relock: () => lock.reassert(),
    checkMs,
    settleMs: 200,
  });
  keeper.start();
  return { store, keeper, lines, lock };
}

/** Polls (bounded: 5 s) until `check` holds. */
async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('not within 5 s');
}

const present = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

describe('IdentityKeeper', () => {
  it('puts back an identity file removed while the agent runs, at once, and says so', async () => {
    const { store, keeper, lines } = await keeping();
    await rm(store.identityFile);
    await until(() => present(store.identityFile));
    expect(await store.load()).toEqual(identity);
    expect(lines).toEqual([expect.stringContaining(`${store.identityFile} was removed while the agent ran`)]);
    expect(lines[0]).toContain("run 'connector-agent unenroll'");
    await keeper.stop();
  });

  it('puts back the whole state dir (0700), with its lock and status, and watches the new one', async () => {
    const { store, keeper, lines } = await keeping();
    await rm(store.dir, { recursive: true });
    await until(() => present(join(store.dir, 'agent.pid')));
    expect(await store.load()).toEqual(identity);
    expect((await stat(store.dir)).mode & 0o777).toBe(0o700);
    expect((await stat(store.identityFile)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(join(store.dir, 'agent.pid'), 'utf8')).pid).toBe(process.pid);
    await until(async () => (await store.readStatus())?.state === 'connected');
    // Removed again: the watch on the new dir sees it too.
    await rm(store.dir, { recursive: true });
    await until(() => present(store.identityFile));
    expect(lines.filter((l) => l.includes('was removed'))).toHaveLength(2);
    await keeper.stop();
  });

  it('leaves alone a file that is there, even one it cannot read as an identity', async () => {
    const { store, keeper, lines } = await keeping(50);
    await writeFile(store.identityFile, 'not json');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await readFile(store.identityFile, 'utf8')).toBe('not json');
    expect(lines).toEqual([]);
    await keeper.stop();
  });

  it('stopped (before a wipe), it puts nothing back', async () => {
    const { store, keeper } = await keeping(50);
    await keeper.stop();
    await rm(store.identityFile);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await present(store.identityFile)).toBe(false);
  });

  it('a dir it cannot make again is said once, then tried at each check until it works', async () => {
    const { store, keeper, lines } = await keeping(50);
    // As root no mode keeps it out: a file where the dir was.
    await rm(store.dir, { recursive: true });
    await writeFile(store.dir, 'a file where the dir was');
    await until(async () => lines.some((l) => l.startsWith('cannot write in the state dir')));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(lines.filter((l) => l.startsWith('cannot write'))).toHaveLength(1);
    expect(lines.find((l) => l.startsWith('cannot write'))).toContain(
      'the identity is only in memory; it is saved again every minute and at exit',
    );
    await rm(store.dir);
    await until(() => present(store.identityFile));
    await until(async () => lines.at(-1) === 'identity saved again');
    await keeper.stop();
  });
});
