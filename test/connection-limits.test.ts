import { connect, type Socket } from 'node:net';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseServeConfig } from '../server/config.js';
import { connectionLimitsFor } from '../server/http/connection-guard.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** A stranger's connection from `localAddress` that sends half a request (or nothing) and waits. */
interface Holder {
  socket: Socket;
  /** Everything the server sent, once the connection closed. */
  closed: Promise<string>;
  done: boolean;
}

const HALF_REQUESTS = [
  'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n',
  'GET /trpc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n',
  '',
];

function hold(port: number, localAddress: string, index: number): Holder {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  const holder: Holder = { socket, done: false, closed: Promise.resolve('') };
  holder.closed = new Promise((resolve) => {
    let received = '';
    socket.setEncoding('latin1');
    socket.on('connect', () => {
      const half = HALF_REQUESTS[index % HALF_REQUESTS.length]!;
      if (half) socket.write(half);
    });
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      holder.done = true;
      resolve(received);
    });
  });
  return holder;
}

/** A whole GET from `localAddress`, written by hand with `Connection: close`; resolves with the answer. */
function rawGet(port: number, localAddress: string, path = '/healthz'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress }, () =>
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`),
    );
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
    socket.setTimeout(5000, () => socket.destroy());
  });
}

/** A websocket upgrade from `localAddress` that completes (101) and then sends nothing: a handshake under way. */
function upgradeAndWait(port: number, localAddress: string): { socket: Socket; switched: Promise<void> } {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => {});
  const switched = new Promise<void>((resolve, reject) => {
    let received = '';
    socket.setEncoding('latin1');
    socket.on('connect', () =>
      socket.write(
        'GET /trpc?connectionParams=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      ),
    );
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (received.startsWith('HTTP/1.1 101')) resolve();
      else if (received.includes('\r\n')) reject(new Error(`upgrade answered ${received.split('\r\n')[0]}`));
    });
  });
  return { socket, switched };
}

/** One keep-alive connection from `localAddress`, for calls one after another. */
function keepAlive(port: number, localAddress: string) {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  socket.on('error', () => {});
  socket.setEncoding('latin1');
  const state = { socket, closed: false, call };
  socket.on('close', () => {
    state.closed = true;
  });
  let buffered = '';
  let waiting: ((answer: string) => void) | null = null;
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0 || !waiting) return;
    // A length, or chunks up to the last (empty) one.
    const length = /\r\ncontent-length: (\d+)/i.exec(buffered.slice(0, end))?.[1];
    const last = buffered.indexOf('\r\n0\r\n\r\n', end);
    const answerEnd = length !== undefined ? end + 4 + Number(length) : last < 0 ? -1 : last + 7;
    if (answerEnd < 0 || buffered.length < answerEnd) return;
    const answer = buffered.slice(0, answerEnd);
    buffered = buffered.slice(answer.length);
    const resolve = waiting;
    waiting = null;
    resolve(answer);
  });
  function call(path: string, key: string): Promise<string> {
    return new Promise((resolve, reject) => {
      waiting = resolve;
      socket.once('close', () => reject(new Error('connection closed before the answer')));
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\n\r\n`);
    });
  }
  return state;
}

/** The status line of a GET from `localAddress` ('' when closed unanswered). */
async function getFrom(port: number, localAddress: string, path = '/healthz'): Promise<string> {
  return (await rawGet(port, localAddress, path)).split('\r\n')[0] ?? '';
}

/** /metrics over a connection of its own that closes after it, so that it holds no slot. */
async function metricsOf(srv: TestServer): Promise<(name: string) => number> {
  const text = await rawGet(srv.server.port, '127.0.0.1', '/metrics');
  if (!text.startsWith('HTTP/1.1 200')) throw new Error(`/metrics: ${text.split('\r\n')[0]}`);
  return (name) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.slice(name.length + 1)) : 0;
  };
}

function captureLog() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

describe('a request whose body trickles in', () => {
  it('is answered 408 and cut 5 s past the header timeout (it was held 30 s, busy, which nothing evicts)', async () => {
    await using srv = await startTestServer({ config: { headersTimeoutMs: 1000 } });
    const socket = connect({ port: srv.server.port, host: '127.0.0.1' });
    socket.on('error', () => {});
    const started = Date.now();
    let received = '';
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    socket.write(
      'POST /trpc/agent.enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n',
    );
    // One byte every 400 ms, for at most 12 s.
    const drip = setInterval(() => socket.writable && socket.write(' '), 400);
    const bound = setTimeout(() => socket.destroy(), 12_000);
    await closed;
    clearInterval(drip);
    clearTimeout(bound);
    const heldMs = Date.now() - started;
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(heldMs).toBeGreaterThanOrEqual(5500);
    expect(heldMs).toBeLessThan(9000);
  });
});

describe('connections strangers hold before they authenticate are bounded', () => {
  it('half-sent requests from two addresses: each held to its cap, the rest answered 429 at once; agents still connect and the admin API answers; the holders are cut after the header timeout and the server recovers by itself', async () => {
    const { logger, lines } = captureLog();
    await using srv = await startTestServer({
      logger,
      config: { maxUnauthenticatedPerAddress: 10, maxUnauthenticatedConnections: 60, headersTimeoutMs: 1500 },
    });
    const group = await srv.admin.groups.create.mutate({ name: 'Held' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = (await enrollSim(srv.url, key, 'held-host')).enrolled!;

    const holders: Holder[] = [];
    for (const address of ['127.0.0.2', '127.0.0.3'])
      for (let i = 0; i < 15; i++) holders.push(hold(srv.server.port, address, i));
    await eventually('the connections past each address cap refused', async () =>
      holders.filter((h) => h.done).length >= 10 ? true : undefined,
    );
    const startedHolding = Date.now();
    const refused = await Promise.all(holders.filter((h) => h.done).map((h) => h.closed));
    expect(refused).toHaveLength(10);
    for (const answer of refused) {
      expect(answer).toMatch(/^HTTP\/1\.1 429 Too Many Requests\r\n/);
      const retryAfter = Number(/\r\nRetry-After: (\d+)\r\n/.exec(answer)?.[1]);
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(2);
    }
    const held = holders.filter((h) => !h.done);
    expect(held).toHaveLength(20);

    // While they are held: an enrolled agent connects, the admin API and /healthz answer.
    const live = connectSim(srv.url, enrolled);
    await live.waitFor('ready');
    expect(await srv.admin.groups.list.query({})).toHaveLength(1);
    expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);
    const during = await metricsOf(srv);
    expect(during('connector_connections_refused_total{reason="address_limit"}')).toBe(10);
    expect(during('connector_connections_unauthenticated')).toBeGreaterThanOrEqual(20);
    expect(during('connector_sessions_live')).toBe(1);
    // A third address is not held back by the other two.
    expect(await getFrom(srv.server.port, '127.0.0.4')).toBe('HTTP/1.1 200 OK');

    // Cut after the header timeout (1.5 s, checked every 0.75 s), with 408.
    const answers = await Promise.all(held.map((h) => h.closed));
    expect(Date.now() - startedHolding).toBeLessThan(5000);
    for (const answer of answers) expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);

    // Recovered by itself: the held addresses are served again, and the agent was never cut.
    expect(await getFrom(srv.server.port, '127.0.0.2')).toBe('HTTP/1.1 200 OK');
    expect(await getFrom(srv.server.port, '127.0.0.3')).toBe('HTTP/1.1 200 OK');
    const scraped = await metricsOf(srv);
    expect(scraped('connector_connections_unauthenticated')).toBeLessThan(5);
    expect(scraped('connector_sessions_live')).toBe(1);
    expect(live.closes).toEqual([]);
    await live.close();

    // Logged once for the burst, with the count, not once per refusal.
    const logged = lines.filter((l) => l.reason === 'address_limit');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 40, refusedSinceLastLog: 1, limit: 10 });
  });

  it('past the total cap a new connection takes the place of the oldest idle one (half-sent requests from many addresses no longer keep admins out); 503 with Retry-After only when none is idle', async () => {
    await using srv = await startTestServer({
      config: {
        maxUnauthenticatedPerAddress: 10,
        maxUnauthenticatedConnections: 15,
        headersTimeoutMs: 10_000,
        handshakeTimeoutMs: 10_000,
        handshakeGraceMs: 60_000,
      },
    });
    const first = Array.from({ length: 10 }, (_, i) => hold(srv.server.port, '127.0.0.2', i));
    await eventually('the first address holds 10', async () =>
      (await metricsOf(srv))('connector_connections_unauthenticated') >= 10 ? true : undefined,
    );
    const second = Array.from({ length: 10 }, (_, i) => hold(srv.server.port, '127.0.0.3', i));
    // The last 5 of the second address each push out one of the oldest holders: the first address's.
    await eventually('5 of the first address pushed out', async () =>
      first.filter((h) => h.done).length >= 5 ? true : undefined,
    );
    expect(second.filter((h) => h.done)).toHaveLength(0);
    // An admin call and a health check from a third address are served, each in an idle one's place.
    expect(await getFrom(srv.server.port, '127.0.0.4')).toBe('HTTP/1.1 200 OK');
    const scraped = await metricsOf(srv);
    expect(scraped('connector_connections_refused_total{reason="idle_evicted"}')).toBeGreaterThanOrEqual(6);
    expect(scraped('connector_connections_refused_total{reason="unauthenticated_limit"}')).toBe(0);
    for (const holder of [...first, ...second]) holder.socket.destroy();
    await Promise.all([...first, ...second].map((h) => h.closed));

    // Websockets just upgraded (no connectionParams yet, within their grace) are spared: with the
    // cap full of them a new connection is answered 503 with Retry-After.
    const upgraded = Array.from({ length: 15 }, (_, i) =>
      upgradeAndWait(srv.server.port, `127.0.1.${i + 1}`),
    );
    await Promise.all(upgraded.map((u) => u.switched));
    const refused = await rawGet(srv.server.port, '127.0.0.5');
    expect(refused).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\nRetry-After: \d+\r\n/);
    for (const u of upgraded) u.socket.destroy();
    await eventually('a new connection is served', async () =>
      (await getFrom(srv.server.port, '127.0.0.5')) === 'HTTP/1.1 200 OK' ? true : undefined,
    );
    expect(
      (await metricsOf(srv))('connector_connections_refused_total{reason="unauthenticated_limit"}'),
    ).toBeGreaterThanOrEqual(1);
  });

  it('a websocket past its grace that sent no connectionParams, or a request whose body is still arriving, is idle: a new connection takes its place (they kept admins out at 503 for as long as strangers reopened them)', async () => {
    await using srv = await startTestServer({
      config: {
        maxUnauthenticatedPerAddress: 10,
        maxUnauthenticatedConnections: 10,
        headersTimeoutMs: 60_000,
        handshakeTimeoutMs: 60_000,
        handshakeGraceMs: 200,
      },
    });
    const upgraded = Array.from({ length: 10 }, () => upgradeAndWait(srv.server.port, '127.0.0.2'));
    await Promise.all(upgraded.map((u) => u.switched));
    const upgradedClosed = upgraded.map(
      (u) => new Promise<void>((resolve) => u.socket.once('close', () => resolve())),
    );
    let evicted = 0;
    for (const done of upgradedClosed) void done.then(() => evicted++);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await getFrom(srv.server.port, '127.0.0.4')).toBe('HTTP/1.1 200 OK');
    await eventually('one upgraded socket pushed out', async () => (evicted >= 1 ? true : undefined));
    for (const u of upgraded) u.socket.destroy();
    await Promise.all(upgradedClosed);

    // Requests whose headers came whole but whose bodies trickle in: waited on, not worked for. Each
    // asks for `100 Continue`, which the server sends as it takes the request up (its 'request').
    const trickling = Array.from({ length: 10 }, () => {
      const socket = connect({ port: srv.server.port, host: '127.0.0.1', localAddress: '127.0.0.3' });
      socket.on('error', () => {});
      socket.setEncoding('latin1');
      const continued = new Promise<void>((resolve) => {
        socket.on('data', (chunk: string) => {
          if (chunk.startsWith('HTTP/1.1 100 ')) socket.write('{"key": ');
          resolve();
        });
      });
      socket.on('connect', () =>
        socket.write(
          'POST /trpc/agent.enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n' +
            'Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n',
        ),
      );
      return {
        socket,
        continued,
        closed: new Promise<void>((resolve) => socket.once('close', () => resolve())),
      };
    });
    await Promise.all(trickling.map((t) => t.continued));
    expect(await getFrom(srv.server.port, '127.0.0.4')).toBe('HTTP/1.1 200 OK');
    expect(trickling.filter((t) => t.socket.destroyed).length).toBeGreaterThanOrEqual(1);
    const scraped = await metricsOf(srv);
    expect(scraped('connector_connections_refused_total{reason="idle_evicted"}')).toBeGreaterThanOrEqual(2);
    expect(scraped('connector_connections_refused_total{reason="unauthenticated_limit"}')).toBe(0);
    for (const t of trickling) t.socket.destroy();
    await Promise.all(trickling.map((t) => t.closed));
  });

  it("a keep-alive connection whose call carried a valid admin key is an admin's from then on: newcomers past the cap never push it out (a wrong key's connection stays a stranger's)", async () => {
    await using srv = await startTestServer({
      config: {
        maxUnauthenticatedPerAddress: 10,
        maxUnauthenticatedConnections: 3,
        headersTimeoutMs: 60_000,
      },
    });
    const admin = keepAlive(srv.server.port, '127.0.0.5');
    const listing = `/trpc/groups.list?input=${encodeURIComponent('{}')}`;
    expect(await admin.call(listing, srv.adminKey)).toMatch(/^HTTP\/1\.1 200 /);
    const stranger = keepAlive(srv.server.port, '127.0.0.6');
    expect(await stranger.call(listing, `cak_${'x'.repeat(43)}`)).toMatch(/^HTTP\/1\.1 401 /);
    // The stranger's and the scrape's own: not the admin's.
    expect((await metricsOf(srv))('connector_connections_unauthenticated')).toBe(2);

    // Holders fill the cap and more come: each pushes out the oldest idle stranger, never the admin.
    const holders = Array.from({ length: 6 }, () => hold(srv.server.port, '127.0.0.2', 0));
    await eventually('the stranger pushed out', async () => (stranger.closed ? true : undefined));
    expect(await admin.call(listing, srv.adminKey)).toMatch(/^HTTP\/1\.1 200 /);
    expect(admin.closed).toBe(false);
    for (const holder of holders) holder.socket.destroy();
    admin.socket.destroy();
  });

  it("one peer address and port connected to two of the server's addresses at once: two connections, each counted, neither releasing the other's count (one went uncounted, and the address was short a slot for ever)", async () => {
    await using srv = await startTestServer({ config: { host: '0.0.0.0', maxUnauthenticatedPerAddress: 2 } });
    const { port } = srv.server;
    const opened = (host: string, localPort: number) =>
      new Promise<Socket>((resolve, reject) => {
        const socket = connect({ port, host, localAddress: '127.0.0.8', localPort });
        socket.once('error', reject);
        socket.once('connect', () => resolve(socket));
      });
    const toOne = await opened('127.0.0.1', 0);
    const toOther = await opened('127.0.0.2', toOne.localPort!);
    await eventually('both counted, and the scrape', async () =>
      (await metricsOf(srv))('connector_connections_unauthenticated') === 3 ? true : undefined,
    );
    for (const socket of [toOne, toOther]) {
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.destroy();
      await closed;
    }
    // Both of its slots are free again: one held, and a call beside it is served.
    const holder = hold(port, '127.0.0.8', 2);
    await eventually('the holder is counted', async () =>
      (await metricsOf(srv))('connector_connections_unauthenticated') === 2 ? true : undefined,
    );
    expect(await getFrom(port, '127.0.0.8')).toBe('HTTP/1.1 200 OK');
    holder.socket.destroy();
  });

  it('a connection from the address and port of one just reset, accepted before the server saw the reset, is counted; the reset one does not take its count with it (the address was then short a slot for ever, and the new connection never counted)', async () => {
    await using srv = await startTestServer({ config: { maxUnauthenticatedPerAddress: 2 } });
    const { port } = srv.server;
    const opened = (localPort: number) =>
      new Promise<Socket>((resolve, reject) => {
        const socket = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.7', localPort });
        socket.once('error', reject);
        socket.once('connect', () => resolve(socket));
      });
    const first = await opened(0);
    await eventually('the server counts it', async () =>
      (await metricsOf(srv))('connector_connections_unauthenticated') === 2 ? true : undefined,
    );
    // The peer resets it and connects again from the same port; the server's event loop is busy
    // meanwhile (a storm), so it accepts the new connection before it handles the old one's close.
    const localPort = first.localPort!;
    first.resetAndDestroy();
    const second = opened(localPort);
    const busyUntil = Date.now() + 100;
    while (Date.now() < busyUntil) {} // the server runs in this process: hold its loop
    const again = await second;
    // Counted: the scrape's own connection and this one.
    expect((await metricsOf(srv))('connector_connections_unauthenticated')).toBe(2);
    const closed = new Promise((resolve) => again.once('close', resolve));
    again.destroy();
    await closed;
    // Both of its slots are free again: one held, and a call beside it is served.
    const holder = hold(port, '127.0.0.7', 2);
    await eventually('the holder is counted', async () =>
      (await metricsOf(srv))('connector_connections_unauthenticated') === 2 ? true : undefined,
    );
    expect(await getFrom(port, '127.0.0.7')).toBe('HTTP/1.1 200 OK');
    holder.socket.destroy();
  });

  it("an admin's connection is one only while its calls carry a valid key: once its key is deleted, its next call makes it a stranger's again, counted and pushed out by newcomers (a leaked key's connections stayed out of every cap for as long as they were used)", async () => {
    await using srv = await startTestServer({
      config: {
        maxUnauthenticatedPerAddress: 10,
        maxUnauthenticatedConnections: 3,
        headersTimeoutMs: 60_000,
      },
    });
    const leaked = await srv.admin.apiKeys.create.mutate({ name: 'leaked', scope: 'read' });
    const holder = keepAlive(srv.server.port, '127.0.0.5');
    const listing = `/trpc/groups.list?input=${encodeURIComponent('{}')}`;
    expect(await holder.call(listing, leaked.key!)).toMatch(/^HTTP\/1\.1 200 /);
    // The scrape's own: not the admin's.
    expect((await metricsOf(srv))('connector_connections_unauthenticated')).toBe(1);
    await srv.admin.apiKeys.delete.mutate({ id: leaked.id });
    expect(await holder.call(listing, leaked.key!)).toMatch(/^HTTP\/1\.1 401 /);
    expect((await metricsOf(srv))('connector_connections_unauthenticated')).toBe(2);

    // Holders fill the cap and more come: the oldest idle stranger's connection goes first.
    const holders = Array.from({ length: 6 }, () => hold(srv.server.port, '127.0.0.2', 0));
    await eventually('the holder pushed out', async () => (holder.closed ? true : undefined));
    for (const h of holders) h.socket.destroy();
  });

  it('close to the open-file limit new connections are refused (503, counted as file_limit) before the kernel refuses them silently', async () => {
    // A limit of 100 keeps 64 descriptors for the server's own files: 36 connections.
    expect(connectionLimitsFor(100).maxOpen).toBe(36);
    expect(connectionLimitsFor(20_000)).toEqual({
      maxUnauthenticatedPerAddress: 1024,
      maxUnauthenticated: 5000,
      maxOpen: 19_600,
    });
    await using srv = await startTestServer({
      config: { fileLimit: 100, maxUnauthenticatedPerAddress: 1000, maxUnauthenticatedConnections: 1000 },
    });
    const holders = Array.from({ length: 40 }, (_, i) => hold(srv.server.port, '127.0.0.2', i));
    await eventually('4 refused', async () => (holders.filter((h) => h.done).length >= 4 ? true : undefined));
    const refused = await Promise.all(holders.filter((h) => h.done).map((h) => h.closed));
    expect(refused).toHaveLength(4);
    for (const answer of refused) expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    for (const holder of holders) holder.socket.destroy();
    await Promise.all(holders.map((h) => h.closed));
    const scraped = await metricsOf(srv);
    expect(scraped('connector_connections_refused_total{reason="file_limit"}')).toBe(4);
  });

  it('the caps are --max-unauthenticated-per-address and --max-unauthenticated-connections (or their CONNECTOR_ env)', () => {
    const config = parseServeConfig(
      { maxUnauthenticatedPerAddress: '50' },
      { CONNECTOR_MAX_UNAUTHENTICATED_CONNECTIONS: '2000' },
    );
    expect(config).toMatchObject({ maxUnauthenticatedPerAddress: 50, maxUnauthenticatedConnections: 2000 });
    expect(parseServeConfig({}, {})).toMatchObject({
      maxUnauthenticatedPerAddress: 1024,
      maxUnauthenticatedConnections: null,
      headersTimeoutMs: 10_000,
    });
    expect(() => parseServeConfig({ maxUnauthenticatedPerAddress: '0' }, {})).toThrow(
      '--max-unauthenticated-per-address: must be a whole number (1 or more)',
    );
  });

  it('a number flag out of range or not a number says what it takes, not the schema words', () => {
    for (const port of ['99999', 'abc', '1.5', '-1'])
      expect(() => parseServeConfig({ port }, {}), port).toThrow(
        '--port: must be a whole number from 0 to 65535 (0: any free port)',
      );
    expect(() => parseServeConfig({}, { CONNECTOR_PORT: 'eighty' })).toThrow(
      'CONNECTOR_PORT: must be a whole number from 0 to 65535 (0: any free port)',
    );
  });
});
