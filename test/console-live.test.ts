import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { type ConsoleBatch, openConsole } from './helpers/console.js';
import { startTestServer } from './helpers/server.js';

type Srv = Awaited<ReturnType<typeof startTestServer>>;

async function groupWithKey(srv: Srv, name: string) {
  const group = await srv.admin.groups.create.mutate({ name });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { group, key };
}

const naming = (kind: 'groups' | 'connectors', id: string) => (batch: ConsoleBatch) =>
  batch[kind].includes(id);

describe('console.changes: the admin console live feed over the agents websocket', () => {
  it('sends batches naming what changed: a group created and renamed, an enrollment, a connect, a revoke, a disconnect', async () => {
    await using srv = await startTestServer();
    const feed = openConsole(srv.url, srv.adminKey);
    await feed.started;
    const { group, key } = await groupWithKey(srv, 'Live');
    await feed.waitForBatch(naming('groups', group.id));

    const enrolled = (await enrollSim(srv.url, key, 'live-0')).enrolled!;
    const afterEnroll = await feed.waitForBatch(naming('connectors', enrolled.connectorId));
    expect(afterEnroll.groups).toContain(group.id); // its counts changed
    expect(afterEnroll.resync).toBe(false);

    let from = feed.batches.length;
    const session = connectSim(srv.url, enrolled);
    await session.waitFor('ready');
    await feed.waitForBatch(naming('connectors', enrolled.connectorId), 5000, from);

    from = feed.batches.length;
    await srv.admin.groups.update.mutate({ groupId: group.id, name: 'Live renamed' });
    await feed.waitForBatch(naming('groups', group.id), 5000, from);

    from = feed.batches.length;
    await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    await feed.waitForBatch(naming('groups', group.id), 5000, from);

    from = feed.batches.length;
    await srv.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    const revoked = await feed.waitForBatch(naming('connectors', enrolled.connectorId), 5000, from);
    expect(revoked.groups).toContain(group.id);
    await session.waitForClose();
    await session.close();
    await feed.close();
  });

  it('one socket holds at most 4 console.changes subscriptions (a read key subscribing over and over ran a server out of memory)', async () => {
    await using srv = await startTestServer();
    const reader = await srv.admin.apiKeys.create.mutate({ name: 'dashboard', scope: 'read' });
    const feed = openConsole(srv.url, reader.key);
    await feed.started;
    const subscribe = () => {
      const outcome = { started: false, error: null as unknown, batches: 0 };
      const settled = new Promise<void>((resolve) => {
        const sub = feed.client.console.changes.subscribe(undefined, {
          onStarted: () => {
            outcome.started = true;
            resolve();
          },
          onData: () => {
            outcome.batches++;
          },
          onError: (error) => {
            outcome.error = error;
            resolve();
          },
        });
        Object.assign(outcome, { unsubscribe: () => sub.unsubscribe() });
      });
      return { outcome: outcome as typeof outcome & { unsubscribe(): void }, settled };
    };
    const more = [subscribe(), subscribe(), subscribe(), subscribe()];
    await Promise.all(more.map((m) => m.settled));
    expect(more.map((m) => m.outcome.started)).toEqual([true, true, true, false]);
    expect(String((more[3]!.outcome.error as Error).message)).toContain(
      'already has 4 console.changes subscriptions',
    );
    // One ended makes room for another; the socket and its feeds keep working throughout.
    more[0]!.outcome.unsubscribe();
    const again = subscribe();
    await again.settled;
    await expect.poll(() => again.outcome.started, { timeout: 5000 }).toBe(true);
    const group = await srv.admin.groups.create.mutate({ name: 'Still live' });
    await feed.waitForBatch(naming('groups', group.id));
    await expect.poll(() => again.outcome.batches, { timeout: 5000 }).toBeGreaterThan(0);
    expect(feed.closes).toEqual([]);
    await feed.close();
  });

  it('coalesces a crowd of agents connecting into a batch per window, and a change past 200 ids into a resync', async () => {
    await using srv = await startTestServer();
    const { group, key } = await groupWithKey(srv, 'Crowd');
    const enrolled = [];
    for (let i = 0; i < 205; i += 41)
      enrolled.push(
        ...(
          await Promise.all(Array.from({ length: 41 }, (_, j) => enrollSim(srv.url, key, `crowd-${i + j}`)))
        ).map((r) => r.enrolled!),
      );
    const feed = openConsole(srv.url, srv.adminKey);
    await feed.started;
    const startedAt = performance.now();
    const connecting = enrolled.slice(0, 60);
    const sessions = connecting.map((e) => connectSim(srv.url, e));
    await Promise.all(sessions.map((s) => s.waitFor('ready', 30_000)));
    const named = () => new Set(feed.batches.flatMap((b) => b.connectors));
    await feed.waitForBatch(() => connecting.every((e) => named().has(e.connectorId)));
    const stormMs = performance.now() - startedAt;
    // At most one batch per 250 ms window, however many agents came in it.
    expect(feed.batches.length).toBeLessThanOrEqual(Math.ceil(stormMs / 250) + 1);
    expect(feed.batches.every((b) => !b.resync && b.groups.length === 1)).toBe(true);

    // One delete of a group takes its 205 connectors (and ends 60 sessions): a resync, not 205 ids.
    const from = feed.batches.length;
    await srv.admin.groups.delete.mutate({ groupId: group.id, force: true });
    const resync = await feed.waitForBatch((b) => b.resync, 5000, from);
    expect(resync).toEqual({ groups: [], connectors: [], resync: true });
    await Promise.all(sessions.map((s) => s.close()));
    await feed.close();
  });

  it('lets a read key subscribe, and closes its socket (4001 ADMIN_KEY_INVALID deleted) once the key is deleted', async () => {
    await using srv = await startTestServer();
    const readKey = await srv.admin.apiKeys.create.mutate({ name: 'viewer', scope: 'read' });
    const feed = openConsole(srv.url, readKey.key);
    await feed.started;
    const { group } = await groupWithKey(srv, 'Seen');
    await feed.waitForBatch(naming('groups', group.id));
    await srv.admin.apiKeys.delete.mutate({ id: readKey.id });
    expect(await feed.waitForClose(2000)).toEqual({
      code: CLOSE_CODES.REFUSED,
      reason: 'ADMIN_KEY_INVALID deleted',
    });
    await feed.close();
  });

  it('closes the socket of a key that expires while it is open (4001 ADMIN_KEY_INVALID expired)', async () => {
    await using srv = await startTestServer();
    const shortKey = await srv.admin.apiKeys.create.mutate({
      name: 'short',
      scope: 'admin',
      expiresInDays: 1,
    });
    const feed = openConsole(srv.url, shortKey.key);
    await feed.started;
    srv.clock.advance(2 * 24 * 3600_000);
    expect(await feed.waitForClose(5000)).toEqual({
      code: CLOSE_CODES.REFUSED,
      reason: 'ADMIN_KEY_INVALID expired',
    });
    await feed.close();
  });

  it('refuses a bad key and a provisioning key like a failed admin call, then rate-limits the address', async () => {
    await using srv = await startTestServer();
    const { key } = await groupWithKey(srv, 'Enroll only');
    const refusals = [];
    for (const presented of [key, 'cak_nope_nope', ...Array.from({ length: 10 }, () => 'garbage')]) {
      const feed = openConsole(srv.url, presented);
      refusals.push(await feed.waitForClose());
      expect(feed.batches).toEqual([]);
      await feed.close();
    }
    expect(refusals[0]).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'ADMIN_KEY_INVALID' });
    expect(refusals[1]).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'ADMIN_KEY_INVALID' });
    // The admin auth limit (10 failures a minute per address) is shared with HTTP admin calls.
    expect(refusals.at(-1)!.code).toBe(CLOSE_CODES.RATE_LIMITED);
    expect(refusals.at(-1)!.reason).toMatch(/^RATE_LIMITED retry-after=\d+$/);
    const audit = await srv.admin.audit.list.query({ type: 'admin.refused' });
    expect(audit.some((e) => e.details.path === 'console.changes')).toBe(true);
  });

  it('does not serve console.changes over HTTP or to an agent socket', async () => {
    await using srv = await startTestServer();
    const res = await fetch(`${srv.url}/trpc/console.changes`, {
      headers: { authorization: `Bearer ${srv.adminKey}` },
    });
    const text = await res.text();
    expect(text).toContain('METHOD_NOT_ALLOWED');
  });

  it('counts admin sockets as no agent session, and holds at most 16 per key', async () => {
    await using srv = await startTestServer({ config: { maxSessionsPerAddress: 1 } });
    const feeds = Array.from({ length: 16 }, () => openConsole(srv.url, srv.adminKey));
    await Promise.all(feeds.map((f) => f.started));
    const health = (await (await fetch(`${srv.url}/healthz`)).json()) as { sessions: number };
    expect(health.sessions).toBe(0);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_sessions_live 0$/m);
    expect(metrics).toMatch(/^connector_console_sockets 16$/m);
    // The one session this address may hold is still free for an agent.
    const { key } = await groupWithKey(srv, 'Beside consoles');
    const enrolled = (await enrollSim(srv.url, key, 'beside')).enrolled!;
    const session = connectSim(srv.url, enrolled);
    await session.waitFor('ready');
    expect(srv.server.hub.size).toBe(1);
    const extra = openConsole(srv.url, srv.adminKey);
    expect(await extra.waitForClose()).toEqual({
      code: CLOSE_CODES.RATE_LIMITED,
      reason: 'RATE_LIMITED too many console sockets for this API key',
    });
    // Another key has its own share.
    const other = await srv.admin.apiKeys.create.mutate({ name: 'other', scope: 'read' });
    const otherFeed = openConsole(srv.url, other.key);
    await otherFeed.started;
    await Promise.all([...feeds, extra, otherFeed].map((f) => f.close()));
    await session.close();
  });
});

/** The status line of a websocket upgrade sent with `headers` (101, or the refusal's status). */
function upgradeStatus(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/trpc`, { headers });
    ws.once('upgrade', (res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.once('error', (error) => reject(error));
  });
}

describe('websocket upgrades from a browser: the Origin check', () => {
  it('refuses a foreign Origin with 403, takes the server’s own and none', async () => {
    await using srv = await startTestServer();
    const own = new URL(srv.url).origin;
    expect(await upgradeStatus(srv.url, { origin: 'http://evil.example' })).toBe(403);
    expect(await upgradeStatus(srv.url, { origin: own.replace('http:', 'https:') })).toBe(403);
    expect(await upgradeStatus(srv.url, { origin: 'null' })).toBe(403);
    expect(await upgradeStatus(srv.url, { origin: own })).toBe(101);
    expect(await upgradeStatus(srv.url, {})).toBe(101);
    // The console from its own page works; from another page's it never gets a socket.
    const feed = openConsole(srv.url, srv.adminKey, { origin: own });
    await feed.started;
    await feed.close();
    // An agent sends no Origin and is unaffected.
    const { key } = await groupWithKey(srv, 'No origin');
    const session = connectSim(srv.url, (await enrollSim(srv.url, key, 'agent')).enrolled!);
    await session.waitFor('ready');
    await session.close();
  });

  it('with --public-url, takes only that origin, whatever Host the request came to', async () => {
    await using srv = await startTestServer({ config: { publicUrl: 'https://connect.example.com' } });
    const direct = `http://127.0.0.1:${srv.server.port}`;
    expect(await upgradeStatus(direct, { origin: 'https://connect.example.com' })).toBe(101);
    expect(await upgradeStatus(direct, { origin: direct })).toBe(403);
  });
});
