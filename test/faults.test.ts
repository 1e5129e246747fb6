import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { calculateJwkThumbprint, generateKeyPair, type JWK, SignJWT } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { fullJitterDelayMs } from '../agent/backoff.js';
import type { AgentConfig } from '../agent/config.js';
import { enroll } from '../agent/enroll.js';
import type { AgentLogger } from '../agent/log.js';
import { createTransport } from '../agent/transport.js';
import { createAdminClient } from '../server/admin-client.js';
import { ManualClock } from '../server/clock.js';
import { type AuditEvent, FileAuditLog } from '../server/services/audit.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import type { HeldAuditRecovery } from '../server/store/held-audit.js';
import { loadStoreFiles } from '../server/store/journal.js';
import { IDENTITY_AUDIENCE } from '../shared/protocol.js';
import { connectSim, enrollSim, hostFacts } from './helpers/agent-sim.js';
import { eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { FAKE_CONNECTOR, FAKE_GROUP } from './helpers/hostile-server.js';
import { canMount } from './helpers/mounts.js';
import { spawnServer } from './helpers/processes.js';
import { rawCall, startTestServer, tempDir } from './helpers/server.js';

/** An identity for FAKE_CONNECTOR bound to `publicKey`, as a server of another deployment signs one. */
async function identityFor(publicKey: JWK): Promise<{ identityToken: string; identityExpiresAt: string }> {
  const signer = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const expiresAt = Math.floor(Date.now() / 1000) + 86_400;
  const identityToken = await new SignJWT({
    group_id: FAKE_GROUP,
    provisioning_key_id: 'pk_faultstest1',
    cnf: { jkt: await calculateJwkThumbprint(publicKey) },
  })
    .setProtectedHeader({ alg: 'EdDSA', kid: 'kid-faults' })
    .setIssuer('http://127.0.0.1:7420')
    .setSubject(FAKE_CONNECTOR)
    .setAudience(IDENTITY_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(expiresAt)
    .sign(signer.privateKey);
  return { identityToken, identityExpiresAt: new Date(expiresAt * 1000).toISOString() };
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

async function setup(options: Parameters<typeof startTestServer>[0] = {}) {
  const srv = await startTestServer(options);
  const group = await srv.admin.groups.create.mutate({ name: 'Faults' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { srv, group, key };
}

const mountable = canMount();
/** `round/index` tags in the order they were recorded. */
const byRoundThenIndex = (a: string, b: string) => {
  const [ra, ia] = a.split('/').map(Number);
  const [rb, ib] = b.split('/').map(Number);
  return (ra as number) - (rb as number) || (ia as number) - (ib as number);
};

const count = (text: string, pattern: RegExp) => text.match(new RegExp(pattern.source, 'g'))?.length ?? 0;

const parses = (line: string) => {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
};

describe('faults: crashes, full and read-only disks', () => {
  it('kill -9 during a burst of enrollments, refusals and revocations: every acknowledged one is in the audit log, only the last line may be torn, and the server restarts on a torn tail', async () => {
    const dataDir = await tempDir('ce-fault-kill-');
    const server = await spawnServer(dataDir, ['--enroll-rate-per-minute', '100000']);
    const admin = createAdminClient({ url: server.url, adminKey: server.adminKey });
    const group = await admin.groups.create.mutate({ name: 'Burst' });
    const key = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = new Set<string>();
    const revoked = new Set<string>();
    // Each revocation regenerates the group's key: enrollers follow the current one.
    let currentKey = key;
    let stop = false;
    const workers = [
      ...Array.from({ length: 3 }, async () => {
        for (let i = 0; i < 1000 && !stop; i++) {
          const r = await enrollSim(server.url, currentKey).catch(() => null);
          if (r?.ok) enrolled.add(r.enrolled!.connectorId);
          // A revoke superseded the key: fetch the current one rather than spin on refusals (fast
          // now that repeated refusals are coalesced in the audit log), which would use up the
          // address's failure allowance before enough enrollments were acknowledged.
          else if (r?.reason === 'KEY_SUPERSEDED') {
            const fresh = await admin.provisioningKeys.get.query({ groupId: group.id }).catch(() => null);
            if (fresh?.key) currentKey = fresh.key;
          }
        }
      }),
      (async () => {
        // Refusals are audited too; few enough to stay under the address's failure allowance.
        const forged = `${key.slice(0, -1)}${key.endsWith('x') ? 'y' : 'x'}`;
        for (let i = 0; i < 10 && !stop; i++) await enrollSim(server.url, forged).catch(() => null);
      })(),
      (async () => {
        for (let i = 0; i < 5000 && !stop; i++) {
          // One revocation per few enrollments: each one supersedes the key that enrollments in
          // flight carry, and those refusals count against the address's failure allowance.
          const victim = [...enrolled].find((id) => !revoked.has(id));
          if (!victim || enrolled.size < 4 * (revoked.size + 1)) {
            await new Promise((r) => setTimeout(r, 5));
            continue;
          }
          const done = await admin.connectors.revoke.mutate({ connectorId: victim }).catch(() => null);
          if (!done) continue;
          revoked.add(victim);
          const fresh = await admin.provisioningKeys.get.query({ groupId: group.id }).catch(() => null);
          if (fresh?.key) currentKey = fresh.key;
        }
      })(),
    ];
    for (let i = 0; i < 2000 && (enrolled.size < 24 || revoked.size < 5); i++)
      await new Promise((r) => setTimeout(r, 10));
    server.kill('SIGKILL');
    await server.exited;
    stop = true;
    await Promise.all(workers);
    expect(enrolled.size).toBeGreaterThanOrEqual(20);
    expect(revoked.size).toBeGreaterThanOrEqual(5);

    const auditFile = join(dataDir, 'audit.jsonl');
    const segments = (await readFile(auditFile, 'utf8')).split('\n');
    const complete = segments.slice(0, -1);
    for (const line of complete) expect(parses(line), line).toBe(true);
    const events = complete.map((l) => JSON.parse(l));
    const byType = (type: string) => new Set(events.filter((e) => e.type === type).map((e) => e.connectorId));
    const enrolledEvents = byType('enrollment.succeeded');
    const revokedEvents = byType('connector.revoked');
    for (const id of enrolled) expect(enrolledEvents.has(id), `enrollment of ${id} audited`).toBe(true);
    for (const id of revoked) expect(revokedEvents.has(id), `revocation of ${id} audited`).toBe(true);
    expect(events.some((e) => e.type === 'enrollment.refused' && e.reason === 'KEY_INVALID')).toBe(true);

    // Whatever the kill left, a crash mid-append looks like this: a last line without its end.
    await appendFile(auditFile, '{"id":"evt_torn","at":"2026-0');
    const again = await spawnServer(dataDir, [], server.port);
    const admin2 = createAdminClient({ url: again.url, adminKey: again.adminKey });
    const after = await admin2.groups.create.mutate({ name: 'After the crash' });
    const listed = await admin2.audit.list.query({ type: 'group.created', limit: 5 });
    expect(listed[0]).toMatchObject({ type: 'group.created', groupId: after.id });
    const lines = (await readFile(auditFile, 'utf8')).split('\n').filter(Boolean);
    expect(lines.filter((l) => !parses(l))).toEqual(['{"id":"evt_torn","at":"2026-0']);
    for (const id of revoked)
      expect((await admin2.connectors.get.query({ connectorId: id })).status).toBe('revoked');
    again.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('a full disk under the audit log: an event is acknowledged only once on disk, the ones refused meanwhile (AUDIT_NOT_WRITTEN) are held and written once space returns, in order, with no torn line left between them', async (ctx) => {
    if (!mountable) return ctx.skip('needs root and mount (tmpfs)');
    const dir = await tempDir('ce-fault-full-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    try {
      await writeFile(join(dir, 'ballast'), Buffer.alloc(32 * 1024));
      const writeErrors: unknown[] = [];
      const recoveries: HeldAuditRecovery[] = [];
      const log = await FileAuditLog.open(join(dir, 'audit.jsonl'), new ManualClock(), {
        onWriteError: (error) => writeErrors.push(error),
        onRecovered: (r) => recoveries.push(r),
      });
      const acknowledged: string[] = [];
      const refused: string[] = [];
      let failure: unknown = null;
      let round = 0;
      // Past the first refusal, two more rounds: events that come while others are held.
      for (let failedRounds = 0; round < 200 && failedRounds < 3; round++) {
        const tag = round;
        await Promise.all(
          Array.from({ length: 3 }, (_, j) =>
            log
              .record({
                type: 'test.fill',
                actor: { kind: 'system' },
                details: { pad: 'p'.repeat(1500), tag: `${tag}/${j}` },
              })
              .then(
                () => acknowledged.push(`${tag}/${j}`),
                (e: unknown) => {
                  failure = e;
                  refused.push(`${tag}/${j}`);
                },
              ),
          ),
        );
        if (failure) failedRounds++;
      }
      expect(failure).toMatchObject({ reason: 'AUDIT_NOT_WRITTEN' });
      expect((failure as Error).message).toMatch(/ENOSPC.*holds it in memory/);
      // The operator's log is told the real cause, once for the outage (not once per retry).
      expect(writeErrors).toHaveLength(1);
      expect(writeErrors[0]).toMatchObject({ code: 'ENOSPC' });
      expect(acknowledged.length).toBeGreaterThan(0);
      expect(refused.length).toBeGreaterThanOrEqual(3);
      // Nothing of the refused events is on disk, not even part of a line.
      const during = await readFile(join(dir, 'audit.jsonl'), 'utf8');
      expect(during.endsWith('\n')).toBe(true);
      expect(during.split('\n').filter((l) => l && !parses(l))).toEqual([]);

      await rm(join(dir, 'ballast'));
      const next = await log.record({ type: 'test.after', actor: { kind: 'system' } });
      expect(recoveries).toEqual([expect.objectContaining({ written: refused.length, dropped: 0 })]);
      const lines = (await readFile(join(dir, 'audit.jsonl'), 'utf8')).split('\n').filter(Boolean);
      expect(lines.filter((l) => !parses(l))).toEqual([]);
      const events = lines.map((l) => JSON.parse(l) as AuditEvent);
      const tags = events.filter((e) => e.type === 'test.fill').map((e) => e.details.tag);
      // Every event once, acknowledged or refused, in the order they were recorded.
      expect(tags).toEqual([...acknowledged, ...refused].sort(byRoundThenIndex));
      expect(events.at(-1)?.id).toBe(next.id);
      await log.close();
    } finally {
      execFileSync('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a full disk for longer than the server holds events: the oldest held are dropped, counted in an audit.events_dropped security event once space returns; those still held at shutdown are told as lost', async (ctx) => {
    if (!mountable) return ctx.skip('needs root and mount (tmpfs)');
    const dir = await tempDir('ce-fault-drop-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    let closeLater: (() => Promise<void>) | null = null;
    try {
      const file = join(dir, 'audit.jsonl');
      const lost: number[] = [];
      const open = () =>
        FileAuditLog.open(file, new ManualClock(), { maxHeldEvents: 4, onLost: (n) => lost.push(n) });
      const log = await open();
      closeLater = () => log.close();
      await log.record({ type: 'test.before', actor: { kind: 'system' } });
      await writeFile(join(dir, 'ballast'), Buffer.alloc(64 * 1024)).catch(() => {}); // fills the disk
      const refusals: unknown[] = [];
      for (let i = 0; i < 10; i++)
        await log
          .record({ type: 'test.held', actor: { kind: 'system' }, details: { i, pad: 'p'.repeat(5000) } })
          .catch((e: unknown) => refusals.push(e));
      expect(refusals).toHaveLength(10);
      await rm(join(dir, 'ballast'));
      await log.record({ type: 'test.after', actor: { kind: 'system' } });
      const dropped = await vi.waitFor(async () => {
        const [event] = await log.list({ type: 'audit.events_dropped' });
        if (!event) throw new Error('no audit.events_dropped yet');
        return event;
      });
      expect(dropped).toMatchObject({ security: true, details: { dropped: 6, written: 4 } });
      const held = (await log.list({ type: 'test.held', limit: 100 })).map((e) => e.details.i);
      expect(held).toEqual([9, 8, 7, 6]);

      // Full again at shutdown: what is still held is told, not silently gone.
      await writeFile(join(dir, 'ballast'), Buffer.alloc(64 * 1024)).catch(() => {});
      await log
        .record({ type: 'test.unwritten', actor: { kind: 'system' }, details: { pad: 'p'.repeat(3000) } })
        .catch(() => {});
      closeLater = null;
      await log.close();
      expect(lost).toEqual([1]);
    } finally {
      await closeLater?.();
      execFileSync('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a revoke on a read-only data dir: REVOKE_NOT_SAVED, and its refused event, held while the disk refuses writes, is in the audit log once it takes them again', async (ctx) => {
    if (!mountable) return ctx.skip('needs root and mount (bind mounts)');
    const { srv, key } = await setup();
    await using _ = srv;
    const { enrolled } = await enrollSim(srv.url, key, 'told-revoked');
    const session = connectSim(srv.url, enrolled!);
    await session.waitFor('ready');
    const dir = srv.dataDir;
    execFileSync('mount', ['--bind', dir, dir]);
    let mounted = true;
    try {
      execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
      const r = await rawCall(
        srv.url,
        'connectors.revoke',
        { connectorId: enrolled!.connectorId, reason: 'stolen laptop' },
        { key: srv.adminKey },
      );
      expect(r).toMatchObject({ status: 500, reason: 'REVOKE_NOT_SAVED' });
      expect(await session.waitForClose()).toEqual({ code: 4003, reason: 'CONNECTOR_REVOKED' });
      execFileSync('mount', ['-o', 'remount,bind,rw', dir]);
      execFileSync('umount', [dir]);
      mounted = false;
      // Written by the retry (within 5 s) or with the next event, whichever comes first.
      const [event] = await eventually(
        'the held revoke event written',
        async () => {
          const events = await srv.admin.audit.list.query({ type: 'connector.revoked' });
          return events.length > 0 && events;
        },
        10_000,
      );
      expect(event).toMatchObject({
        outcome: 'refused',
        reason: 'REVOKE_NOT_SAVED',
        security: true,
        connectorId: enrolled!.connectorId,
        actor: { kind: 'admin' },
        details: { reason: 'stolen laptop', sessionsEnded: 1, connectorsCutOff: 1 },
      });
      await session.close();
    } finally {
      if (mounted) execFileSync('umount', [dir]);
    }
  });

  it('a read-only data dir: mutations answer STORE_UNAVAILABLE (500) and reads keep working; an agent enrolling meanwhile retries and, once writable again, enrolls without being rate-limited', async (ctx) => {
    if (!mountable) return ctx.skip('needs root and mount (bind mounts)');
    // Two failed enrollments would exhaust this allowance: outages must not count as failures.
    const { srv, key } = await setup({
      config: { rateLimits: { ...DEFAULT_RATE_LIMITS, enrollFailuresPerAddress: 2 } },
    });
    await using _ = srv;
    const dir = srv.dataDir;
    // A read-only bind mount over the data dir: every new write there fails with EROFS.
    execFileSync('mount', ['--bind', dir, dir]);
    let mounted = true;
    const stateDir = await tempDir('ce-fault-ro-agent-');
    try {
      execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
      const refused = await rawCall(srv.url, 'groups.create', { name: 'Not saved' }, { key: srv.adminKey });
      expect(refused).toMatchObject({ status: 500, ok: false, reason: 'STORE_UNAVAILABLE' });
      expect((await srv.admin.groups.list.query({})).map((g) => g.name)).toEqual(['Faults']);
      expect((await rawCall(srv.url, 'connectors.counts', {}, { key: srv.adminKey })).status).toBe(200);
      expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);

      const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'patient'], stateDir);
      // Said at the 1st, 2nd and 4th attempt (then the 8th, …): four attempts, each refused.
      await agent.waitForOutput(
        /((enrollment failed, retrying|still cannot enroll after \d+ attempts)[^\n]*STORE_UNAVAILABLE[^\n]*\n[\s\S]*){3}/,
      );
      expect(agent.child.exitCode).toBeNull();

      execFileSync('mount', ['-o', 'remount,bind,rw', dir]);
      const connector = await waitConnected(srv.admin, 'patient', 30_000);
      expect((await readIdentity(stateDir))?.connectorId).toBe(connector.id);
      expect(agent.output()).not.toContain('RATE_LIMITED');
      await srv.admin.groups.create.mutate({ name: 'Saved' });
      expect((await srv.admin.groups.list.query({})).map((g) => g.name).sort()).toEqual(['Faults', 'Saved']);
      agent.kill('SIGTERM');
      expect((await agent.exited).code).toBe(0);
      execFileSync('umount', [dir]);
      mounted = false;
      const onDisk = loadStoreFiles(join(dir, 'store.json'))!;
      expect(Object.values(onDisk.groups).map((g) => (g as { name: string }).name)).not.toContain(
        'Not saved',
      );
    } finally {
      if (mounted) execFileSync('umount', [dir]);
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});

describe('faults: the agent through outages and broken state', () => {
  it('full-jitter backoff stays within [0, min(60 s, 1 s·2^attempt)] for any number of attempts', () => {
    for (let attempt = 0; attempt < 5000; attempt++) {
      const ceiling = Math.min(60_000, 1000 * 2 ** attempt);
      const high = fullJitterDelayMs(attempt, 1000, 60_000, () => 0.999_999);
      expect(high).toBeLessThan(ceiling);
      expect(high).toBeGreaterThanOrEqual(Math.floor(ceiling * 0.999));
      expect(fullJitterDelayMs(attempt, 1000, 60_000, () => 0)).toBe(0);
    }
    expect(fullJitterDelayMs(Number.MAX_SAFE_INTEGER, 1000, 60_000, () => 0.5)).toBe(30_000);
  });

  it('enrollment retries through 6 simulated hours of outage (fake timers): never gives up, never waits past 60 s or the server’s retry hint, then enrolls', async () => {
    vi.useFakeTimers();
    const HOURS = 6;
    let calls = 0;
    let outageOver = false;
    let answered = 0;
    let firstCall!: () => void;
    const called = new Promise<void>((resolve) => {
      firstCall = resolve;
    });
    // The identity the server answers at last, bound to the key pair the agent sent (the agent
    // saves no other): signed with real crypto, outside the fake timers, from the first request on.
    let identity: Promise<{ identityToken: string; identityExpiresAt: string }> | null = null;
    const fetch = async (_url: unknown, init: RequestInit = {}): Promise<Response> => {
      if (calls++ === 0) {
        firstCall();
        identity = identityFor(JSON.parse(String(init.body)).publicKey);
      }
      // First a server that accepts and never answers: each attempt must give up by itself.
      if (calls <= 3)
        return new Promise((_, reject) =>
          init.signal?.addEventListener('abort', () => reject(init.signal?.reason)),
        );
      if (!outageOver)
        throw Object.assign(new TypeError('fetch failed'), {
          cause: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:7420' },
        });
      // Back up: first a RATE_LIMITED answer with a retry hint, then the enrollment.
      if (answered++ === 0) {
        const error = {
          message: 'Too many attempts',
          code: -32029,
          data: {
            code: 'TOO_MANY_REQUESTS',
            httpStatus: 429,
            reason: 'RATE_LIMITED',
            retryAfterSeconds: 120,
          },
        };
        return new Response(JSON.stringify({ error }), {
          status: 429,
          headers: { 'content-type': 'application/json' },
        });
      }
      const data = { connectorId: FAKE_CONNECTOR, groupId: FAKE_GROUP, ...(await identity!) };
      return new Response(JSON.stringify({ result: { data } }), {
        status: 200,
        headers: { 'content-type': 'application/json' },
      });
    };
    const waits: number[] = [];
    const problems: string[] = [];
    const logger: AgentLogger = {
      info: () => {},
      error: () => {},
      warn: (_m, fields) => {
        waits.push(Number(fields?.retryInSeconds));
        problems.push(String(fields?.reason));
      },
    };
    const config = {
      servers: ['http://127.0.0.1:7420'],
      provisioningKey: 'cpk_x_y',
      name: null,
    } as AgentConfig & {
      provisioningKey: string;
    };
    const controller = new AbortController();
    let settled = false;
    const result = enroll(
      config,
      { ...createTransport(null), fetch: fetch as typeof globalThis.fetch },
      logger,
      controller.signal,
      hostFacts(),
    ).finally(() => {
      settled = true;
    });
    // The key pair is made on libuv's thread pool, which fake timers do not drive: on a loaded
    // machine the simulated hours could pass before the first attempt, so they start from it.
    await called;
    for (let minute = 0; minute < HOURS * 60; minute++) await vi.advanceTimersByTimeAsync(60_000);
    expect(settled).toBe(false);
    // Said: the 1st and 2nd attempts (no answer), not the 3rd (the same again), the 4th (a new problem).
    expect(problems.slice(0, 2)).toEqual(Array(2).fill('no answer within 30 s'));
    expect(problems[2]).toContain('ECONNREFUSED');
    // Then at each doubling and every 15 min: a few dozen lines in 6 hours, not one a minute.
    expect(problems.length).toBeGreaterThanOrEqual(HOURS * 4);
    expect(problems.length).toBeLessThan(HOURS * 4 + 12);
    // At least one attempt per minute once the backoff has reached its cap.
    expect(calls).toBeGreaterThan(HOURS * 60 * 0.9);
    expect(Math.max(...waits)).toBeLessThanOrEqual(60);

    await identity;
    outageOver = true;
    for (let i = 0; i < 10 && !settled; i++) await vi.advanceTimersByTimeAsync(125_000);
    const enrolled = await result;
    expect(enrolled).toMatchObject({ connectorId: FAKE_CONNECTOR, server: 'http://127.0.0.1:7420' });
    // The RATE_LIMITED answer was waited out for its hint (120 s) plus jitter, not a blind backoff.
    expect(waits.at(-1)).toBeGreaterThanOrEqual(120);
    expect(waits.at(-1)).toBeLessThanOrEqual(121);
    controller.abort();
  });

  it('a websocket opening handshake that is never answered is abandoned after the request timeout', async () => {
    const held = new Set<Socket>();
    const silent = createServer((socket) => {
      held.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    try {
      const { WebSocket } = createTransport(null, { requestTimeoutMs: 300 });
      const ws = new WebSocket(`ws://127.0.0.1:${port}/trpc`);
      const error = await new Promise<Error>((resolve) => ws.on('error', resolve));
      expect(error.message).toMatch(/handshake has timed out/);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('the server vanishing: the agent keeps retrying (several failed attempts, no exit, identity untouched), then reconnects to the restarted server without enrolling again', async () => {
    const { srv, group, key } = await setup();
    const stateDir = await tempDir('ce-fault-vanish-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'stubborn'], stateDir);
    const before = await waitConnected(srv.admin, 'stubborn');
    const identityBytes = await readFile(join(stateDir, 'identity.json'), 'utf8');
    const port = srv.server.port;
    await srv.stop();
    await agent.waitForOutput(/cannot connect; retrying.*ECONNREFUSED/);
    // Four refused reconnects (backoff ceilings 1 s, 2 s, 4 s): the problem said once, then again at
    // the 2nd and 4th attempts.
    await agent.waitForOutput(
      /still cannot connect after 4 attempts; retrying in \d+\.\d s {2}\(error=.*ECONNREFUSED/,
      20_000,
    );
    expect(agent.child.exitCode).toBeNull();
    expect(await readFile(join(stateDir, 'identity.json'), 'utf8')).toBe(identityBytes);
    expect(count(agent.output(), /cannot connect; retrying/)).toBe(1);
    expect(count(agent.output(), /still cannot connect after 2 attempts/)).toBe(1);
    expect(count(agent.output(), /still cannot connect after 3 attempts/)).toBe(0);
    // At most the one disconnection, not a line per attempt. (One loaded full run logged none, with
    // one "had opened" flag shared by every socket: tRPC can hold an old and a new socket at once,
    // and the wrong one's close could take it. Each socket now says whether it opened; 6 runs since,
    // 3 under two CPU burners, logged exactly one, but the cause was never seen, so the bound stays.)
    expect(count(agent.output(), /disconnected; reconnecting/), agent.output()).toBeLessThanOrEqual(1);

    await using again = await startTestServer({ dataDir: srv.dataDir, config: { port } });
    const after = await waitConnected(again.admin, 'stubborn', 30_000);
    expect(after.id).toBe(before.id);
    expect((await again.admin.provisioningKeys.get.query({ groupId: group.id })).enrollments).toBe(1);
    expect(await readFile(join(stateDir, 'identity.json'), 'utf8')).toBe(identityBytes);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a server that lost its keys (a new, empty data dir on the same address): the agent keeps its identity and retries, saying why, and comes back when its own server does', async () => {
    const { srv, key } = await setup();
    const stateDir = await tempDir('ce-fault-foreign-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'kept'], stateDir);
    const before = await waitConnected(srv.admin, 'kept');
    const identityBytes = await readFile(join(stateDir, 'identity.json'), 'utf8');
    const port = srv.server.port;
    await srv.stop();
    // What an operator gets with the wrong --data-dir, or a replica started without its database.
    const stranger = await startTestServer({ config: { port } });
    try {
      await agent.waitForOutput(
        /the server refused this identity as not its own; keeping it and retrying in \d+\.\d s.*IDENTITY_UNKNOWN_SIGNER/,
        30_000,
      );
      // Each refusal grows the backoff (the socket opened, which tRPC counts as a new start): in
      // 10 s a handful of attempts, not one every half second (about 16 before).
      await new Promise((resolve) => setTimeout(resolve, 10_000));
      const refused = (await stranger.admin.audit.list.query({ type: 'session.refused' }))
        .filter((e) => e.reason === 'IDENTITY_UNKNOWN_SIGNER')
        .reduce((n, e) => n + ((e.details.suppressed as number | undefined) ?? 1), 0);
      expect(refused).toBeGreaterThanOrEqual(2);
      expect(refused).toBeLessThanOrEqual(7);
      // Attempts count from the last session, refused connects while the stranger started included,
      // so the first repeat of this problem comes at the 2nd, 4th or a later power of two.
      await agent.waitForOutput(/still cannot connect after \d+ attempts.*IDENTITY_UNKNOWN_SIGNER/, 30_000);
      expect(agent.child.exitCode).toBeNull();
      expect(await readFile(join(stateDir, 'identity.json'), 'utf8')).toBe(identityBytes);
      expect(agent.output()).not.toMatch(/wiping|identity wiped/);
    } finally {
      await stranger.stop();
    }
    await using again = await startTestServer({ dataDir: srv.dataDir, config: { port } });
    const after = await waitConnected(again.admin, 'kept', 60_000);
    expect(after.id).toBe(before.id);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
  });

  it('a network that drops connections mid-request and mid-handshake (a TCP proxy): the agent ends up enrolled once, connected, with the identity it first saved', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const proxy = await flakyProxy(srv.server.port, {
      enroll: [{ up: 0 }, { up: 30 }, { up: 400 }],
      session: [{ up: 100 }, { down: 60 }, { up: 400 }],
    });
    const stateDir = await tempDir('ce-fault-proxy-');
    try {
      const agent = spawnAgent(['--server', proxy.url, '--key', key, '--name', 'flaky'], stateDir);
      const connector = await waitConnected(srv.admin, 'flaky', 40_000).catch((e) => {
        throw new Error(`${e.message}\ncuts=${JSON.stringify(proxy.cuts)}\n${agent.output()}`);
      });
      expect(proxy.cuts).toEqual(['enroll', 'enroll', 'enroll', 'session', 'session', 'session']);
      // Three failed attempts: the first and second are always said, the third if its problem is new.
      expect(count(agent.output(), /enrollment failed, retrying/)).toBeGreaterThanOrEqual(1);
      const said = count(agent.output(), /enrollment failed, retrying|still cannot enroll after/);
      expect(said).toBeGreaterThanOrEqual(2);
      expect(said).toBeLessThanOrEqual(3);
      const identity = await readIdentity(stateDir);
      expect(identity?.connectorId).toBe(connector.id);
      expect(agent.output().match(/enrolled; identity saved/g)).toHaveLength(1);
      expect((await srv.admin.connectors.counts.query({})).total).toBe(1);
      agent.kill('SIGTERM');
      expect((await agent.exited).code).toBe(0);
      expect((await readIdentity(stateDir))?.identityToken).toBe(identity?.identityToken);
    } finally {
      await proxy.close();
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a half-written identity: a leftover identity.json.tmp-<pid> is ignored; a truncated or empty identity.json stops the agent (exit 2, which the unit does not restart) untouched, never enrolling over it', async () => {
    const { srv, group, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-fault-idfile-');
    const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'careful'], stateDir);
    const connector = await waitConnected(srv.admin, 'careful');
    first.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);
    const file = join(stateDir, 'identity.json');
    const good = await readFile(file, 'utf8');

    const leftover = join(stateDir, 'identity.json.tmp-99999');
    await writeFile(leftover, good.slice(0, 40), { mode: 0o600 });
    const rerun = spawnAgent(['--server', srv.url], stateDir);
    await rerun.waitForOutput(/connected to/);
    expect((await srv.admin.connectors.get.query({ connectorId: connector.id })).connection).toBe(
      'connected',
    );
    rerun.kill('SIGTERM');
    expect((await rerun.exited).code).toBe(0);
    expect(await readFile(file, 'utf8')).toBe(good);

    for (const damaged of [good.slice(0, Math.floor(good.length / 2)), '']) {
      await writeFile(file, damaged, { mode: 0o600 });
      const agent = spawnAgent(['--server', srv.url, '--key', key], stateDir);
      // Exit 2, which the unit does not restart: every restart would find the same file.
      expect((await agent.exited).code, agent.output()).toBe(2);
      expect(agent.output()).toContain(`${file} is damaged`);
      expect(agent.output()).not.toContain('enrolling');
      expect(await readFile(file, 'utf8')).toBe(damaged);
    }
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).enrollments).toBe(1);
    expect((await srv.admin.connectors.counts.query({})).total).toBe(1);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('revoked while offline: the agent exits 4 and wipes its identity on its next start, even after a server restart; a copy of that identity on another host never works either', async () => {
    const { srv, key } = await setup();
    const stateDir = await tempDir('ce-fault-offline-');
    const copyDir = await tempDir('ce-fault-copy-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'offline'], stateDir);
    const connector = await waitConnected(srv.admin, 'offline');
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await mkdir(copyDir, { recursive: true });
    await copyFile(join(stateDir, 'identity.json'), join(copyDir, 'identity.json'));
    await eventually(
      'disconnected',
      async () =>
        (await srv.admin.connectors.get.query({ connectorId: connector.id })).connection === 'disconnected',
    );
    await srv.admin.connectors.revoke.mutate({ connectorId: connector.id, reason: 'host decommissioned' });
    const port = srv.server.port;
    await srv.stop();

    // The same server back at its URL (an agent presents its identity only to that one).
    await using again = await startTestServer({ dataDir: srv.dataDir, config: { port } });
    for (const dir of [stateDir, copyDir]) {
      const run = spawnAgent(['--server', again.url], dir);
      expect((await run.exited).code, run.output()).toBe(4);
      expect(existsSync(join(dir, 'identity.json'))).toBe(false);
    }
    const refusals = await again.admin.audit.list.query({ type: 'session.refused' });
    expect(refusals).toHaveLength(2);
    for (const event of refusals)
      expect(event).toMatchObject({ reason: 'CONNECTOR_REVOKED', security: true });
    for (const dir of [stateDir, copyDir]) await rm(dir, { recursive: true, force: true });
  });
});

interface Cut {
  /** Bytes let through from the agent before cutting. */
  up?: number;
  /** Bytes let through from the server before cutting. */
  down?: number;
}

/**
 * A TCP proxy on loopback in front of the server that breaks connections on purpose: enrollment
 * requests (POST) and websocket handshakes (GET upgrade) are each cut after their planned number
 * of bytes, in order; later connections, and TLS probes, pass untouched.
 */
async function flakyProxy(targetPort: number, plan: { enroll: Cut[]; session: Cut[] }) {
  const queues = { enroll: [...plan.enroll], session: [...plan.session] };
  const cuts: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.once('data', (first: Buffer) => {
      const kind = first.toString('latin1').startsWith('POST') ? 'enroll' : 'session';
      // A TLS hello (first byte 0x16) is the agent asking, after a cut, whether the port speaks TLS:
      // passed through, outside the plan.
      const cut = first[0] === 0x16 ? undefined : queues[kind].shift();
      if (cut) cuts.push(kind);
      const upstream = connect(targetPort, '127.0.0.1');
      sockets.add(upstream);
      upstream.on('close', () => {
        sockets.delete(upstream);
        client.destroy();
      });
      upstream.on('error', () => {});
      client.on('close', () => upstream.destroy());
      const sent = { up: 0, down: 0 };
      const relay = (direction: 'up' | 'down', to: Socket) => (data: Buffer) => {
        const limit = cut?.[direction];
        if (limit === undefined) {
          to.write(data);
          return;
        }
        const room = limit - sent[direction];
        if (data.length < room) {
          sent[direction] += data.length;
          to.write(data);
          return;
        }
        to.write(data.subarray(0, Math.max(0, room)), () => {
          client.destroy();
          upstream.destroy();
        });
      };
      const up = relay('up', upstream);
      client.on('data', up);
      upstream.on('data', relay('down', client));
      up(first);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    cuts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
