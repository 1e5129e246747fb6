import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { createAdminClient } from '../server/admin-client.js';
import { parseServeConfig } from '../server/config.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { hostFacts } from './helpers/agent-sim.js';
import { freshDatabase } from './helpers/postgres.js';
import { startRelay } from './helpers/relay.js';
import { startReplicas } from './helpers/replicas.js';
import { rawCall, startTestServer, type TestServer } from './helpers/server.js';

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : Number.NaN;
}

const madeUp = (i: number) => `cak_made${String(i).padStart(4, '0')}up_${'z'.repeat(43)}`;

describe('failed admin authentication is limited per address', () => {
  it('counts made-up keys at GET /admin/backup with the rest: 429 with Retry-After once used up, a valid key still gets in', async () => {
    await using srv = await startTestServer();
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${srv.url}/admin/backup`, {
        headers: { authorization: `Bearer ${madeUp(i)}` },
      });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      await res.arrayBuffer();
    }
    expect(statuses).toEqual([...Array(10).fill(401), 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThan(0);
    // The tRPC API from the same address is blocked too: one budget per address.
    expect(await rawCall(srv.url, 'groups.list', {}, { key: madeUp(99) })).toMatchObject({ status: 429 });
    const valid = await fetch(`${srv.url}/admin/backup`, {
      headers: { authorization: `Bearer ${srv.adminKey}` },
    });
    expect(valid.status).toBe(200);
    await valid.arrayBuffer();
  });

  it('50 made-up keys from one address at once, on a replica (where each check waits on the change feed): still 10 × 401 and 40 × 429', async () => {
    await using db = await freshDatabase();
    const [srv] = (await startReplicas(db.url, 1)) as [TestServer];
    await using _ = srv;
    const statuses = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const res = await fetch(`${srv.url}/trpc/groups.list`, {
          headers: { authorization: `Bearer ${madeUp(i)}` },
        });
        await res.arrayBuffer();
        return res.status;
      }),
    );
    expect(statuses.filter((s) => s === 401)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40);
  });

  it('300 made-up keys from one address: 10 × 401, then 429 with Retry-After; counted in /metrics; audited as security events, coalesced', async () => {
    await using srv = await startTestServer();
    expect(DEFAULT_RATE_LIMITS.adminAuthFailuresPerMinute).toBe(10);
    const statuses = new Map<number, number>();
    let retryAfter: string | null = null;
    let lastBody: { error?: { data?: { reason?: string; retryAfterSeconds?: number } } } = {};
    for (let i = 0; i < 300; i++) {
      const res = await fetch(`${srv.url}/trpc/groups.list`, {
        headers: { authorization: `Bearer ${madeUp(i)}` },
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      lastBody = (await res.json()) as typeof lastBody;
    }
    expect(Object.fromEntries(statuses)).toEqual({ 401: 10, 429: 290 });
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(retryAfter)).toBeLessThanOrEqual(60);
    expect(lastBody.error?.data?.reason).toBe('RATE_LIMITED');
    expect(lastBody.error?.data?.retryAfterSeconds).toBeGreaterThanOrEqual(1);

    // No key at all counts the same as a wrong one.
    expect(await rawCall(srv.url, 'groups.create', { name: 'x' })).toMatchObject({ status: 429 });

    const text = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metric(text, 'connector_admin_auth_failures_total')).toBe(301);
    expect(metric(text, 'connector_admin_auth_rate_limited_total')).toBe(291);

    const events = await srv.admin.audit.list.query({ type: 'admin.refused', limit: 100 });
    // Two reasons, one window each: the first refusal of each, and a summary of each with its count.
    expect(events.length).toBeLessThanOrEqual(4);
    const total = (reason: string) =>
      events
        .filter((e) => e.reason === reason)
        .reduce((sum, e) => sum + ((e.details.suppressed as number | undefined) ?? 1), 0);
    expect(total('ADMIN_KEY_INVALID')).toBe(10);
    expect(total('RATE_LIMITED')).toBe(291);
    for (const event of events)
      expect(event).toMatchObject({
        security: true,
        remoteAddress: '127.0.0.1',
        actor: { kind: 'anonymous' },
      });
  });

  it('a valid key from the blocked address still gets in, and other addresses are not blocked', async () => {
    await using srv = await startTestServer();
    for (let i = 0; i < 12; i++) await rawCall(srv.url, 'groups.list', {}, { key: madeUp(i) });
    expect(await rawCall(srv.url, 'groups.list', {}, { key: madeUp(99) })).toMatchObject({
      status: 429,
      reason: 'RATE_LIMITED',
    });
    // The blocked address is 127.0.0.1, which is also where the admin is: the admin works on.
    expect(await srv.admin.groups.create.mutate({ name: 'Still Mine' })).toMatchObject({
      name: 'Still Mine',
    });
    expect(await rawCall(srv.url, 'groups.list', {}, { key: srv.adminKey })).toMatchObject({ status: 200 });

    await using relay = await startRelayResource(srv.url, '127.0.0.2');
    expect(await rawCall(relay.url, 'groups.list', {}, { key: madeUp(1) })).toMatchObject({
      status: 401,
      reason: 'ADMIN_KEY_INVALID',
    });
    const viaRelay = createAdminClient({ url: relay.url, adminKey: srv.adminKey });
    expect(await viaRelay.groups.list.query({})).toHaveLength(1);
  });

  it('the limit is --admin-auth-failures-per-minute (or CONNECTOR_ADMIN_AUTH_FAILURES_PER_MINUTE)', async () => {
    expect(
      parseServeConfig({ adminAuthFailuresPerMinute: '3' }, {}).rateLimits.adminAuthFailuresPerMinute,
    ).toBe(3);
    expect(
      parseServeConfig({}, { CONNECTOR_ADMIN_AUTH_FAILURES_PER_MINUTE: '25' }).rateLimits
        .adminAuthFailuresPerMinute,
    ).toBe(25);
    expect(() => parseServeConfig({ adminAuthFailuresPerMinute: '0' }, {})).toThrow(
      /--admin-auth-failures-per-minute/,
    );

    const config = parseServeConfig({ adminAuthFailuresPerMinute: '3' }, {});
    await using srv = await startTestServer({ config: { rateLimits: config.rateLimits } });
    const answers = [];
    for (let i = 0; i < 5; i++)
      answers.push((await rawCall(srv.url, 'groups.list', {}, { key: madeUp(i) })).status);
    expect(answers).toEqual([401, 401, 401, 429, 429]);
  });

  it('a rate-limited enrollment carries Retry-After too', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...DEFAULT_RATE_LIMITS, enrollPerAddressPerMinute: 1 } },
    });
    const { publicJwk } = await generateAgentKeyPair();
    const body = JSON.stringify({
      provisioningKey: 'cpk_nope',
      publicKey: publicJwk,
      host: hostFacts(),
      agentVersion: 'test',
    });
    const enroll = () =>
      fetch(`${srv.url}/trpc/agent.enroll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
    expect((await enroll()).status).not.toBe(429);
    const limited = await enroll();
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });
});

async function startRelayResource(target: string, localAddress: string) {
  const relay = await startRelay(target, { localAddress });
  return { url: relay.url, [Symbol.asyncDispose]: () => relay.close() };
}
