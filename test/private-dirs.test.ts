import { statSync } from 'node:fs';
import {
  chmod,
  chown,
  lstat,
  mkdir,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IdentityFileError, IdentityStore, type SavedIdentity } from '../agent/identity-store.js';
import { spawnAgent } from './helpers/agents.js';
import { type Proc, spawnTs } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** Root can hand a dir to another user; these tests need that to play "another user". */
const isRoot = process.getuid?.() === 0;
const OTHER_UID = 12345;

/**
 * Whether a user other than root can reach this checkout's code (every dir above it searchable by
 * others): the tests that run a command as a third user need that. A clone under /root or in a
 * 0700 temp dir cannot be, and there they are skipped rather than failing for it.
 */
function reachableByOthers(): boolean {
  for (let dir = process.cwd(); ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return false;
    if (dirname(dir) === dir) return true;
  }
}
const asThirdUser = isRoot && reachableByOthers();

const IDENTITY: SavedIdentity = {
  connectorId: 'con_test',
  groupId: 'grp_test',
  server: 'http://127.0.0.1:2',
  identityToken: 'token',
  identityExpiresAt: new Date(0).toISOString(),
  privateJwk: { kty: 'OKP', crv: 'Ed25519', x: 'public-part', d: 'PRIVATE-PART-MUST-NOT-LEAK' },
  enrolledAt: new Date(0).toISOString(),
};

/** A dir outside the state or data dir with a file a planted link points to. */
async function victim(content = 'victim\n') {
  const dir = await tempDir('ce-victim-');
  const file = join(dir, 'victim');
  await writeFile(file, content, { mode: 0o644 });
  return { file, content, dir };
}

/** Waits for a process to exit, or kills it after `ms` (a process that should have stopped at once). */
async function exitedWithin(proc: Proc, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms);
  });
  const result = await Promise.race([proc.exited, timeout]);
  clearTimeout(timer);
  if (result === 'timeout') {
    proc.kill('SIGKILL');
    await proc.exited;
    return { code: null as number | null, timedOut: true };
  }
  return { code: result.code, timedOut: false };
}

/** The non-empty lines a process printed, and whether any looks like a stack frame. */
const linesOf = (output: string) => output.split('\n').filter((line) => line.trim() !== '');
const hasStack = (output: string) => /^\s+at /m.test(output);

describe.skipIf(!isRoot)('a state or data dir owned by another user is refused', () => {
  it('agent: exits 2 with one line naming the owner and the fix, and touches nothing in the dir', async () => {
    const stateDir = await tempDir('ce-foreign-state-');
    await chmod(stateDir, 0o777);
    await chown(stateDir, OTHER_UID, OTHER_UID);
    const agent = spawnAgent(['--server', 'http://127.0.0.1:2', '--key', 'cpk_abc_def'], stateDir);
    const { code, timedOut } = await exitedWithin(agent, 15_000);
    expect(timedOut, agent.output()).toBe(false);
    expect(code, agent.output()).toBe(2);
    const lines = linesOf(agent.output());
    expect(lines, agent.output()).toHaveLength(1);
    expect(lines[0]).toContain(`${stateDir} is owned by uid ${OTHER_UID}`);
    expect(lines[0]).toContain('--state-dir');
    expect(lines[0]).toContain('chown');
    expect(hasStack(agent.output())).toBe(false);
    // Not made private for its owner's attacker, and nothing written into it.
    expect((await stat(stateDir)).mode & 0o777).toBe(0o777);
    expect(await readFile(join(stateDir, 'status.json')).catch(() => null)).toBeNull();
    await rm(stateDir, { recursive: true, force: true });
  });

  it.runIf(asThirdUser)(
    'agent: a 0700 state dir of another user (an identity copied there and chown -R to it), run by a third user: one line naming its owner and the fix, exit 2; it was EACCES and a stack trace, exit 1, which the unit restarts for ever',
    async () => {
      const stateDir = await tempDir('ce-foreign-0700-');
      const identityFile = join(stateDir, 'identity.json');
      await writeFile(identityFile, JSON.stringify(IDENTITY), { mode: 0o600 });
      for (const path of [stateDir, identityFile]) await chown(path, OTHER_UID, OTHER_UID);
      const third = { uid: OTHER_UID + 1, gid: OTHER_UID + 1 };
      try {
        const agent = spawnAgent(['--server', 'http://127.0.0.1:2'], stateDir, {}, { user: third });
        const { code, timedOut } = await exitedWithin(agent, 15_000);
        expect(timedOut, agent.output()).toBe(false);
        expect(code, agent.output()).toBe(2);
        const lines = linesOf(agent.output());
        expect(lines, agent.output()).toHaveLength(1);
        expect(lines[0]).toContain(
          `${stateDir} is owned by uid ${OTHER_UID}, not by this user, uid ${third.uid}`,
        );
        expect(lines[0]).toContain(`sudo -u '#${OTHER_UID}'`);
        expect(lines[0]).toContain(`sudo chown -R ${third.uid} ${stateDir}`);
        expect(hasStack(agent.output())).toBe(false);
        // Run as root: the fix takes the files too (a chown of the dir alone left identity.json unreadable).
        const asRoot = spawnAgent(['--server', 'http://127.0.0.1:2'], stateDir);
        expect((await exitedWithin(asRoot, 15_000)).code, asRoot.output()).toBe(2);
        expect(linesOf(asRoot.output())).toHaveLength(1);
        expect(asRoot.output()).toContain(`chown -R root ${stateDir}`);
        expect(asRoot.output()).not.toMatch(/chown \d/);
      } finally {
        await rm(stateDir, { recursive: true, force: true });
      }
    },
  );

  it('agent: a state dir that is a link to a dir owned by another user is refused the same way', async () => {
    const parent = await tempDir('ce-linked-state-');
    const foreign = join(parent, 'foreign');
    await mkdir(foreign, { mode: 0o700 });
    await chown(foreign, OTHER_UID, OTHER_UID);
    const link = join(parent, 'state');
    await symlink(foreign, link);
    const store = new IdentityStore(link);
    await expect(store.ensureDir()).rejects.toMatchObject({ code: 'DIR_NOT_OWNED' });
    await rm(parent, { recursive: true, force: true });
  });

  it('agent: a group/other-writable state dir of its own is made 0700, not refused', async () => {
    const stateDir = await tempDir('ce-open-state-');
    await chmod(stateDir, 0o777);
    await new IdentityStore(stateDir).ensureDir();
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('agent: a state dir made with its missing parents is 0700, the parents as mkdir -p makes them', async () => {
    const root = await tempDir('ce-parents-');
    const stateDir = join(root, 'opt', 'connector', 'state');
    const umask = process.umask(0o022);
    try {
      await new IdentityStore(stateDir).ensureDir();
    } finally {
      process.umask(umask);
    }
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(root, 'opt'))).mode & 0o777).toBe(0o755);
    expect((await stat(join(root, 'opt', 'connector'))).mode & 0o777).toBe(0o755);
    await rm(root, { recursive: true, force: true });
  });

  it('server: data dir files left open to others (a copy with a loose umask) are made 0600 at start, and it says so', async () => {
    const dataDir = await tempDir('ce-loose-files-');
    const first = await startTestServer({ dataDir });
    await first.admin.groups.create.mutate({ name: 'Loose' });
    await first.stop();
    const loose = ['secret.key', 'signing-keys.json', 'admin.key', 'store.json'];
    for (const name of loose) await chmod(join(dataDir, name), 0o644);
    const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    try {
      await serve.waitForOutput(/listening on/);
      expect(serve.output()).toContain('data dir files were open to group or others');
      for (const name of loose) expect((await stat(join(dataDir, name))).mode & 0o777, name).toBe(0o600);
    } finally {
      serve.kill('SIGTERM');
      await serve.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('server: serve exits 2 with one line, no stack, and creates nothing', async () => {
    const dataDir = await tempDir('ce-foreign-data-');
    await chown(dataDir, OTHER_UID, OTHER_UID);
    const server = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    const { code, timedOut } = await exitedWithin(server, 15_000);
    expect(timedOut, server.output()).toBe(false);
    expect(code, server.output()).toBe(2);
    const lines = linesOf(server.output());
    expect(lines, server.output()).toHaveLength(1);
    expect(lines[0]).toMatch(/^error: cannot start: /);
    expect(lines[0]).toContain(`${dataDir} is owned by uid ${OTHER_UID}`);
    expect(lines[0]).toContain('--data-dir');
    expect(hasStack(server.output())).toBe(false);
    expect(await readFile(join(dataDir, 'secret.key')).catch(() => null)).toBeNull();
    await rm(dataDir, { recursive: true, force: true });
  });

  it.runIf(asThirdUser)(
    'server: the fix for a used data dir of another user is to run as it, or chown -R (a chown of the dir alone left its 0600 files unreadable)',
    async () => {
      const dataDir = await tempDir('ce-foreign-used-');
      const first = await startTestServer({ dataDir });
      await first.stop();
      const backupFile = join(await tempDir('ce-foreign-backup-'), 'backup.jsonl');
      const backup = spawnTs('server/main.ts', ['backup', '--out', backupFile, '--data-dir', dataDir]);
      expect((await backup.exited).code, backup.output()).toBe(0);
      const chownAll = async (uid: number) => {
        await chown(dataDir, uid, uid);
        for (const name of await readdir(dataDir)) await chown(join(dataDir, name), uid, uid);
      };
      await chownAll(OTHER_UID);
      const runAs = `sudo -u '#${OTHER_UID}'`;
      for (const args of [
        ['serve', '--data-dir', dataDir, '--port', '0'],
        ['restore', '--from', backupFile, '--data-dir', dataDir, '--force'],
      ]) {
        const proc = spawnTs('server/main.ts', args);
        const { code, timedOut } = await exitedWithin(proc, 15_000);
        expect(timedOut, proc.output()).toBe(false);
        expect(code, proc.output()).toBe(2);
        const lines = linesOf(proc.output());
        expect(lines, proc.output()).toHaveLength(1);
        expect(lines[0]).toContain(`${dataDir} is owned by uid ${OTHER_UID}`);
        expect(lines[0]).toContain(runAs);
        expect(lines[0]).toContain(`chown -R root ${dataDir}`);
        expect(lines[0]).not.toMatch(/chown \d/);
      }
      // Run by a user who cannot even look into the 0700 dir: the same line and exit 2 (not exit 1,
      // "permission denied", which the unit restarts for ever), for serve and an offline backup.
      const third = { uid: OTHER_UID + 1, gid: OTHER_UID + 1 };
      for (const args of [
        ['serve', '--data-dir', dataDir, '--port', '0'],
        ['backup', '--out', join(tmpdir(), `ce-foreign-${process.pid}.jsonl`), '--data-dir', dataDir],
      ]) {
        const proc = spawnTs('server/main.ts', args, { user: third });
        const { code, timedOut } = await exitedWithin(proc, 15_000);
        expect(timedOut, proc.output()).toBe(false);
        expect(code, proc.output()).toBe(2);
        const lines = linesOf(proc.output());
        expect(lines, proc.output()).toHaveLength(1);
        expect(lines[0]).toContain(
          `${dataDir} is owned by uid ${OTHER_UID}, not by this user, uid ${third.uid}`,
        );
        expect(lines[0]).toContain(`sudo chown -R ${third.uid} ${dataDir}`);
      }
      // The fix as printed: the dir and its files back, and the server starts on its state.
      await chownAll(0);
      const serve = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
      try {
        await serve.waitForOutput(/listening on/);
      } finally {
        serve.kill('SIGTERM');
        await serve.exited;
        for (const dir of [dataDir, dirname(backupFile)]) await rm(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('planted links in the state dir are not written or read through', () => {
  it("status: a link at status.json and at the old temp name leave the link's target unchanged", async () => {
    const stateDir = await tempDir('ce-links-status-');
    const v1 = await victim();
    const v2 = await victim();
    await symlink(v1.file, join(stateDir, 'status.json'));
    await symlink(v2.file, join(stateDir, `status.json.tmp-${process.pid}`));
    const store = new IdentityStore(stateDir);
    await store.writeStatus({
      state: 'stopped',
      status: null,
      connectorId: null,
      server: null,
      detail: null,
    });
    expect(await readFile(v1.file, 'utf8')).toBe(v1.content);
    expect(await readFile(v2.file, 'utf8')).toBe(v2.content);
    // The link itself was replaced by the new status file.
    expect((await lstat(join(stateDir, 'status.json'))).isFile()).toBe(true);
    expect((await store.readStatus())?.state).toBe('stopped');
    for (const dir of [stateDir, v1.dir, v2.dir]) await rm(dir, { recursive: true, force: true });
  });

  it('identity: a link at the old temp name never receives the private key', async () => {
    const stateDir = await tempDir('ce-links-identity-');
    const v = await victim();
    await symlink(v.file, join(stateDir, `identity.json.tmp-${process.pid}`));
    const store = new IdentityStore(stateDir);
    await store.save(IDENTITY);
    expect(await readFile(v.file, 'utf8')).toBe(v.content);
    const saved = await lstat(store.identityFile);
    expect(saved.isFile()).toBe(true);
    expect(saved.mode & 0o777).toBe(0o600);
    expect(await store.load()).toEqual(IDENTITY);
    for (const dir of [stateDir, v.dir]) await rm(dir, { recursive: true, force: true });
  });

  it('identity: a link at identity.json is not read (a foreign identity is not used)', async () => {
    const stateDir = await tempDir('ce-links-load-');
    const v = await victim(JSON.stringify(IDENTITY));
    await symlink(v.file, join(stateDir, 'identity.json'));
    const store = new IdentityStore(stateDir);
    const error = await store.load().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdentityFileError);
    expect((error as Error).message).toContain('symbolic link');
    for (const dir of [stateDir, v.dir]) await rm(dir, { recursive: true, force: true });
  });
});

describe('planted links in the data dir are not written through', () => {
  it('links at the old temp names of every file the server writes durably leave their targets unchanged', async () => {
    const dataDir = await tempDir('ce-links-data-');
    const names = ['secret.key', 'store.json', 'signing-keys.json', 'admin.key'];
    const victims = await Promise.all(names.map(() => victim()));
    for (const [i, name] of names.entries())
      await symlink(victims[i]!.file, join(dataDir, `${name}.tmp-${process.pid}`));
    await using srv = await startTestServer({ dataDir });
    for (const [i, name] of names.entries()) {
      expect(await readFile(victims[i]!.file, 'utf8'), name).toBe(victims[i]!.content);
      const written = await lstat(join(dataDir, name));
      expect(written.isFile(), name).toBe(true);
      expect(written.mode & 0o777, name).toBe(0o600);
    }
    expect(srv.adminKey).toMatch(/^cak_/);
    for (const v of victims) await rm(v.dir, { recursive: true, force: true });
  });
});
