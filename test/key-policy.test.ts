import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { IdentityAuthority } from '../server/services/identity.js';
import { DAY_MS } from '../shared/durations.js';
import { enrollSim } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { rawCall, startTestServer, type TestServer } from './helpers/server.js';

const HOUR_MS = 3_600_000;
/** The admin CLI against a test server, as `npm run -s server -- ARGS` runs it. */
const cli = (srv: TestServer, args: string[]) =>
  serverCli([...args, '--server', srv.url], { CONNECTOR_ADMIN_KEY: srv.adminKey });

/**
 * Holds every identity signing until `n` enrollments are waiting in it (or `boundMs` passed), then
 * lets them all go: each has passed the key check made before signing, and all race into the write.
 * The signing itself is the real one, only later, as on a busy server.
 */
function holdSigningUntil(n: number, boundMs = 10_000) {
  const original = IdentityAuthority.prototype.issue;
  let waiting = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const timer = setTimeout(release, boundMs);
  const spy = vi.spyOn(IdentityAuthority.prototype, 'issue').mockImplementation(async function (
    this: IdentityAuthority,
    ...args
  ) {
    if (++waiting >= n) release();
    await gate;
    return original.apply(this, args);
  });
  return {
    get waiting() {
      return waiting;
    },
    [Symbol.dispose]() {
      clearTimeout(timer);
      spy.mockRestore();
    },
  };
}

async function group(srv: TestServer, name: string) {
  return srv.admin.groups.create.mutate({ name });
}

describe('provisioning key policy: use limit and lifetime per key', () => {
  it('with maxUses 5, exactly 5 of 50 parallel enrollments succeed; the rest are KEY_EXHAUSTED and the key reads exhausted everywhere', async () => {
    await using srv = await startTestServer();
    const g = await group(srv, 'Five');
    const key = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: g.id, maxUses: 5 });
    expect(key).toMatchObject({ status: 'active', uses: 0, maxUses: 5 });

    // 50 real HTTP requests in flight at once, all past the first key check before any is counted.
    let results: Awaited<ReturnType<typeof enrollSim>>[];
    {
      using held = holdSigningUntil(50);
      results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => enrollSim(srv.url, key.key!, `race-${i}`)),
      );
      expect(held.waiting).toBe(50);
    }
    expect(results.filter((r) => r.ok)).toHaveLength(5);
    const refused = results.filter((r) => !r.ok);
    expect(refused).toHaveLength(45);
    for (const r of refused) expect(r).toMatchObject({ status: 401, reason: 'KEY_EXHAUSTED' });
    expect((await srv.admin.groups.get.query({ groupId: g.id })).counts.total).toBe(5);

    const view = await srv.admin.provisioningKeys.get.query({ groupId: g.id });
    expect(view).toMatchObject({ status: 'exhausted', key: null, uses: 5, maxUses: 5, enrollments: 5 });
    const row = (await srv.admin.apiKeys.list.query({})).find((k) => k.id === key.keyId);
    expect(row).toMatchObject({ kind: 'provisioning', status: 'exhausted', uses: 5, maxUses: 5 });
    expect((await srv.admin.apiKeys.list.query({})).find((k) => k.kind === 'admin')).toMatchObject({
      status: 'active',
      uses: null,
      maxUses: null,
    });

    // Deleting a connector gives no use back: the key made 5 enrollments.
    const [oneOfThem] = (await srv.admin.connectors.list.query({ groupId: g.id })).items;
    await srv.admin.connectors.delete.mutate({ connectorId: oneOfThem!.id });
    expect(await srv.admin.provisioningKeys.get.query({ groupId: g.id })).toMatchObject({
      status: 'exhausted',
      uses: 5,
      enrollments: 4,
    });

    const regenerated = await srv.admin.audit.list.query({ type: 'provisioning_key.regenerated' });
    expect(regenerated[0]).toMatchObject({
      keyId: key.keyId,
      details: { maxUses: 5, ttlMs: 14 * DAY_MS },
    });
    const refusals = await srv.admin.audit.list.query({ type: 'enrollment.refused' });
    expect(refusals.some((e) => e.reason === 'KEY_EXHAUSTED' && e.keyId === key.keyId && e.security)).toBe(
      true,
    );
    const succeeded = await srv.admin.audit.list.query({ type: 'enrollment.succeeded' });
    expect(succeeded).toHaveLength(5);

    // A new key starts counting again; without --max-uses it has no limit.
    const fresh = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: g.id });
    expect(fresh).toMatchObject({ status: 'active', uses: 0, maxUses: null });
    expect((await enrollSim(srv.url, fresh.key!)).ok).toBe(true);
  });

  it('a key regenerated with a ttl expires after it, not after --key-ttl; bounds are 1s to 365d', async () => {
    await using srv = await startTestServer();
    const g = await group(srv, 'Short');
    const key = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: g.id, ttl: '2h' });
    expect(Date.parse(key.expiresAt) - Date.parse(key.createdAt)).toBe(2 * HOUR_MS);
    srv.clock.advance(2 * HOUR_MS - 1);
    expect((await enrollSim(srv.url, key.key!)).ok).toBe(true);
    srv.clock.advance(1);
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({ ok: false, reason: 'KEY_EXPIRED' });
    const audit = await srv.admin.audit.list.query({ type: 'provisioning_key.regenerated' });
    expect(audit[0]?.details).toMatchObject({ maxUses: null, ttlMs: 2 * HOUR_MS });

    for (const bad of [
      { ttl: '0s' },
      { ttl: '500ms' },
      { ttl: '366d' },
      { ttl: '2 weeks' },
      { maxUses: 0 },
      { maxUses: 1.5 },
      { maxUses: 1_000_001 },
    ]) {
      const r = await rawCall(
        srv.url,
        'provisioningKeys.regenerate',
        { groupId: g.id, ...bad },
        { key: srv.adminKey },
      );
      expect(r, JSON.stringify(bad)).toMatchObject({ ok: false, status: 400, reason: 'VALIDATION_FAILED' });
    }
    // Refused input changed nothing: the 2 h key is still the current one.
    expect((await srv.admin.provisioningKeys.get.query({ groupId: g.id })).keyId).toBe(key.keyId);
    const year = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: g.id, ttl: '365d' });
    expect(Date.parse(year.expiresAt) - Date.parse(year.createdAt)).toBe(365 * DAY_MS);
  });

  it('a group can be created with a policy for its first key', async () => {
    await using srv = await startTestServer();
    const g = await srv.admin.groups.create.mutate({ name: 'Born', maxUses: 2, ttl: '3h' });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: g.id });
    expect(key).toMatchObject({ status: 'active', uses: 0, maxUses: 2 });
    expect(Date.parse(key.expiresAt) - Date.parse(key.createdAt)).toBe(3 * HOUR_MS);
    const created = await srv.admin.audit.list.query({ type: 'group.created' });
    expect(created[0]?.details).toMatchObject({ maxUses: 2, ttlMs: 3 * HOUR_MS });
    const bad = await rawCall(srv.url, 'groups.create', { name: 'Never', ttl: '0s' }, { key: srv.adminKey });
    expect(bad).toMatchObject({ status: 400, reason: 'VALIDATION_FAILED' });
    expect((await srv.admin.groups.list.query({})).map((x) => x.name)).toEqual(['Born']);
  });

  it("a revoke's regeneration keeps the group's policy: the same use limit and lifetime, counted afresh", async () => {
    await using srv = await startTestServer();
    const g = await group(srv, 'Kept');
    const key = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: g.id, maxUses: 3, ttl: '1h' });
    const enrolled = await enrollSim(srv.url, key.key!);
    srv.clock.advance(60_000);
    await srv.admin.connectors.revoke.mutate({ connectorId: enrolled.enrolled!.connectorId });
    const next = await srv.admin.provisioningKeys.get.query({ groupId: g.id });
    expect(next.keyId).not.toBe(key.keyId);
    expect(next).toMatchObject({ status: 'active', uses: 0, maxUses: 3 });
    expect(Date.parse(next.expiresAt)).toBe(srv.clock.now() + HOUR_MS);
  });

  it('an enrollment whose write fails counts no use: the key still allows all of its enrollments', async () => {
    await using srv = await startTestServer();
    const g = await group(srv, 'Rollback');
    const key = await srv.admin.provisioningKeys.regenerate.mutate({ groupId: g.id, maxUses: 1 });
    // Take the data dir away: the enrollment cannot be made durable.
    await rm(srv.dataDir, { recursive: true, force: true });
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({ ok: false, reason: 'STORE_UNAVAILABLE' });
    await mkdir(srv.dataDir, { recursive: true, mode: 0o700 });
    expect(await srv.admin.provisioningKeys.get.query({ groupId: g.id })).toMatchObject({
      status: 'active',
      uses: 0,
    });
    expect((await enrollSim(srv.url, key.key!)).ok).toBe(true);
    expect(await enrollSim(srv.url, key.key!)).toMatchObject({ ok: false, reason: 'KEY_EXHAUSTED' });
  });

  it('loads a store written before keys had a policy: no limit, no uses, and counting starts', async () => {
    const first = await startTestServer();
    const g = await group(first, 'Old');
    const key = await first.admin.provisioningKeys.get.query({ groupId: g.id });
    await first.stop();
    // The previous version's shape: key records without maxUses and uses.
    const file = join(first.dataDir, 'store.json');
    const data = JSON.parse(await readFile(file, 'utf8'));
    for (const record of Object.values(data.provisioningKeys) as Array<Record<string, unknown>>) {
      delete record.maxUses;
      delete record.uses;
      expect(Object.keys(record).sort()).toEqual(
        ['createdAt', 'encrypted', 'expiresAt', 'groupId', 'hash', 'id', 'lastUsedAt', 'supersededAt'].sort(),
      );
    }
    await writeFile(file, JSON.stringify(data));

    await using srv = await startTestServer({ dataDir: first.dataDir, clock: first.clock });
    expect(await srv.admin.provisioningKeys.get.query({ groupId: g.id })).toMatchObject({
      keyId: key.keyId,
      key: key.key,
      status: 'active',
      uses: 0,
      maxUses: null,
    });
    expect((await enrollSim(srv.url, key.key!)).ok).toBe(true);
    expect(await srv.admin.provisioningKeys.get.query({ groupId: g.id })).toMatchObject({ uses: 1 });
  });

  it('CLI: regenerate-key takes --max-uses, --unlimited and --ttl, and keeps what no flag names; `groups key` of a used-up or expired key prints no key and fails with the reason and the fix', async () => {
    await using srv = await startTestServer();
    const created = await cli(srv, ['groups', 'create', 'Cli', '--max-uses', '3', '--ttl', '3h']);
    expect(created.code, created.stderr).toBe(0);
    const g = (await srv.admin.groups.list.query({}))[0]!;
    expect(await srv.admin.provisioningKeys.get.query({ groupId: g.id })).toMatchObject({ maxUses: 3 });
    const made = await cli(srv, ['groups', 'regenerate-key', 'Cli', '--max-uses', '1', '--ttl', '2h']);
    expect(made.code, made.stderr).toBe(0);
    const key = made.stdout.trim();
    expect(key).toMatch(/^cpk_/);
    expect(made.stderr).toMatch(/uses:\s+0 of 1/);
    expect((await enrollSim(srv.url, key)).ok).toBe(true);

    const exhausted = await cli(srv, ['groups', 'key', 'Cli']);
    expect(exhausted.code).toBe(1);
    expect(exhausted.stdout).toBe('');
    expect(exhausted.stderr.trim().split('\n')).toHaveLength(1);
    expect(exhausted.stderr).toContain('KEY_EXHAUSTED');
    expect(exhausted.stderr).toContain(
      "`groups regenerate-key Cli` for a new one (it keeps this key's lifetime of 2h and its limit of 1 use: --ttl, --max-uses or --unlimited to change them)",
    );
    const listed = await cli(srv, ['api-keys', 'list']);
    expect(listed.stdout).toMatch(/Connector Provisioning Key - Cli .*exhausted.*1\/1/);

    const longer = await cli(srv, ['groups', 'regenerate-key', 'Cli', '--ttl', '1h']);
    expect(longer.code, longer.stderr).toBe(0);
    // What no flag names is kept: still single-use (it became unlimited, silently).
    expect(await srv.admin.provisioningKeys.get.query({ groupId: g.id })).toMatchObject({ maxUses: 1 });
    srv.clock.advance(HOUR_MS);
    const expired = await cli(srv, ['groups', 'key', 'Cli']);
    expect(expired.code).toBe(1);
    expect(expired.stdout).toBe('');
    expect(expired.stderr.trim().split('\n')).toHaveLength(1);
    expect(expired.stderr).toContain('KEY_EXPIRED');
    expect(expired.stderr).toContain("(it keeps this key's lifetime of 1h and its limit of 1 use");

    // No flag: the new key is as the current one (one use, one hour), as in the console.
    const kept = await cli(srv, ['groups', 'regenerate-key', 'Cli']);
    expect(kept.code, kept.stderr).toBe(0);
    const keptKey = await srv.admin.provisioningKeys.get.query({ groupId: g.id });
    expect(keptKey.maxUses).toBe(1);
    expect(Date.parse(keptKey.expiresAt) - Date.parse(keptKey.createdAt)).toBe(HOUR_MS);
    const unlimited = await cli(srv, ['groups', 'regenerate-key', 'Cli', '--unlimited']);
    expect(unlimited.code, unlimited.stderr).toBe(0);
    const open = await srv.admin.provisioningKeys.get.query({ groupId: g.id });
    expect(open.maxUses).toBeNull();
    expect(Date.parse(open.expiresAt) - Date.parse(open.createdAt)).toBe(HOUR_MS);

    for (const bad of [
      ['--max-uses', '0'],
      ['--ttl', '400d'],
      ['--max-uses', '2', '--unlimited'],
    ]) {
      const r = await cli(srv, ['groups', 'regenerate-key', 'Cli', ...bad]);
      expect(r.code, bad.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), bad.join(' ')).toHaveLength(1);
    }
  });
});
