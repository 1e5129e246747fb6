import { rm } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { IdentityStore } from '../agent/identity-store.js';
import type { AgentLogger } from '../agent/log.js';
import { createProof } from '../agent/proof.js';
import { runSession } from '../agent/session.js';
import {
  captureSessionNonce,
  createTransport,
  parseRetryAfterMs,
  sessionNonceOf,
} from '../agent/transport.js';
import { parseServeConfig } from '../server/config.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, type Enrolled, enrollSim, hostFacts, openSession } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { startTestServer, type TestServer, tempDir } from './helpers/server.js';

const UPGRADE_HEADERS =
  'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

/** Writes a websocket upgrade by hand and returns the server's answer: status line and headers. */
function rawUpgrade(
  port: number,
  version = '13',
): Promise<{ status: string; headers: Record<string, string>; raw: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let raw = '';
    const done = () => {
      const [head = ''] = raw.split('\r\n\r\n');
      const [status = '', ...lines] = head.split('\r\n');
      const headers = Object.fromEntries(
        lines.map((line) => {
          const at = line.indexOf(':');
          return [line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim()];
        }),
      );
      resolve({ status, headers, raw });
    };
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      raw += chunk;
    });
    socket.on('error', (error) => (raw ? done() : reject(error)));
    socket.on('close', done);
    socket.setTimeout(10_000, () => socket.destroy());
    socket.write(
      `GET /trpc?connectionParams=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n${UPGRADE_HEADERS}Sec-WebSocket-Version: ${version}\r\n\r\n`,
    );
  });
}

async function metrics(srv: TestServer): Promise<{ inProgress: number; shed: number }> {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const value = (name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.slice(name.length + 1)) : Number.NaN;
  };
  return {
    inProgress: value('connector_handshakes_in_progress'),
    shed: value('connector_handshakes_shed_total'),
  };
}

/** A websocket that completes the upgrade and then never sends its connectionParams: it holds a slot. */
async function holdHandshake(srv: TestServer): Promise<WebSocket> {
  const ws = new WebSocket(`${srv.url.replace(/^http/, 'ws')}/trpc?connectionParams=1`);
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('close', () => reject(new Error('held handshake closed before it opened')));
  });
  return ws;
}

function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) resolve(-1);
    else ws.once('close', (code) => resolve(code));
  });
}

async function enrolledSims(srv: TestServer, names: string[]) {
  const group = await srv.admin.groups.create.mutate({ name: 'Storm' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return Promise.all(names.map(async (name) => (await enrollSim(srv.url, key, name)).enrolled!));
}

describe('admission control: websocket handshakes in progress are capped', () => {
  it('the cap is --max-handshakes-in-progress or CONNECTOR_MAX_HANDSHAKES_IN_PROGRESS (the flag wins), 4096 by default, at least 1', () => {
    const env = { CONNECTOR_MAX_HANDSHAKES_IN_PROGRESS: '64' };
    expect(parseServeConfig({}, {}).maxHandshakesInProgress).toBe(4096);
    expect(parseServeConfig({}, env).maxHandshakesInProgress).toBe(64);
    expect(parseServeConfig({ maxHandshakesInProgress: '32' }, env).maxHandshakesInProgress).toBe(32);
    for (const bad of ['0', '-1', 'many', '1.5'])
      expect(() => parseServeConfig({ maxHandshakesInProgress: bad }, {})).toThrow(
        /--max-handshakes-in-progress/,
      );
  });

  it('past the cap an upgrade is answered 503 with Retry-After at once and counted (the held handshakes within their grace); admin calls still work; once the held handshakes end, an agent connects', async () => {
    await using srv = await startTestServer({
      config: { maxHandshakesInProgress: 2, handshakeGraceMs: 60_000 },
    });
    const [agent] = await enrolledSims(srv, ['late']);
    const held = [await holdHandshake(srv), await holdHandshake(srv)];
    expect(await metrics(srv)).toEqual({ inProgress: 2, shed: 0 });

    const started = performance.now();
    const answer = await rawUpgrade(srv.server.port);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(answer.status).toBe('HTTP/1.1 503 Service Unavailable');
    expect(answer.headers.connection).toBe('close');
    const retryAfter = Number(answer.headers['retry-after']);
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(5);
    expect(answer.raw).not.toMatch(/Sec-WebSocket-Accept/i);

    // An agent's own upgrade is shed too: it sees no session, only a failed attempt.
    const shedSession = connectSim(srv.url, agent!);
    expect((await shedSession.waitForClose()).code).toBe(1006);
    await shedSession.close();
    expect(await metrics(srv)).toEqual({ inProgress: 2, shed: 2 });

    // The admin API shares the port but not the cap.
    expect((await srv.admin.connectors.counts.query({})).total).toBe(1);
    expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);

    for (const ws of held) ws.close();
    await eventually('held handshakes released', async () => (await metrics(srv)).inProgress === 0);
    const session = connectSim(srv.url, agent!);
    await session.waitFor('ready');
    expect(await metrics(srv)).toEqual({ inProgress: 0, shed: 2 });
    await session.close();
  });

  it('every way out of a handshake frees its slot: accepted, refused, malformed connectionParams, closed mid-handshake, upgrade refused by ws; after many cycles at a cap of 1 nothing was shed and none is in progress', async () => {
    await using srv = await startTestServer({ config: { maxHandshakesInProgress: 1 } });
    const [agent] = await enrolledSims(srv, ['cycling']);
    const released = () =>
      eventually('slot released', async () => (await metrics(srv)).inProgress === 0, 5000);

    for (let cycle = 0; cycle < 5; cycle++) {
      // A live session holds no slot: the handshakes below would be shed if it did.
      const accepted = connectSim(srv.url, agent!);
      await accepted.waitFor('ready');
      expect((await metrics(srv)).inProgress).toBe(0);

      const refused = openSession(srv.url, { identity: 'not.a.jwt', proof: 'nope' });
      expect(await refused.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'IDENTITY_INVALID' });
      await refused.close();
      await released();

      const garbled = await holdHandshake(srv);
      garbled.send('this is not a connectionParams message');
      await closed(garbled);
      await released();

      const abandoned = await holdHandshake(srv);
      abandoned.terminate();
      await released();

      const wrongVersion = await rawUpgrade(srv.server.port, '99');
      expect(wrongVersion.status).toMatch(/^HTTP\/1\.1 400 /);
      await released();
      await accepted.close();
    }
    expect(await metrics(srv)).toEqual({ inProgress: 0, shed: 0 });
  });

  it('every slot taken by sockets that sent no connectionParams within the grace: a newcomer takes the place of the one waiting longest (closed 4408, counted, logged once), so strangers that upgrade and say nothing cannot keep agents out; one still in its grace is not replaced', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    await using srv = await startTestServer({
      logger,
      config: { maxHandshakesInProgress: 2, handshakeGraceMs: 200, handshakeTimeoutMs: 60_000 },
    });
    const [agent, second] = await enrolledSims(srv, ['newcomer', 'second']);
    const oldest = await holdHandshake(srv);
    const older = await holdHandshake(srv);
    const oldestClosed = closed(oldest);
    const olderClosed = closed(older);
    await new Promise((resolve) => setTimeout(resolve, 300));

    const session = connectSim(srv.url, agent!);
    await session.waitFor('ready');
    expect(await oldestClosed).toBe(CLOSE_CODES.HANDSHAKE_TIMEOUT);
    expect(older.readyState).toBe(WebSocket.OPEN);
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    expect(text).toMatch(/^connector_handshakes_evicted_total 1$/m);
    expect(text).toMatch(/^connector_handshakes_shed_total 0$/m);

    // A fresh holder, in its grace, beside the older one past it: the next newcomer replaces the
    // older one; the one after that finds only the fresh holder and is shed.
    const fresh = await holdHandshake(srv);
    const shedBefore = (await metrics(srv)).shed;
    const replacing = connectSim(srv.url, second!);
    await replacing.waitFor('ready');
    expect(await olderClosed).toBe(CLOSE_CODES.HANDSHAKE_TIMEOUT);
    const freshest = await holdHandshake(srv);
    const answer = await rawUpgrade(srv.server.port);
    expect(answer.status).toBe('HTTP/1.1 503 Service Unavailable');
    expect((await metrics(srv)).shed).toBe(shedBefore + 1);
    expect(fresh.readyState).toBe(WebSocket.OPEN);
    expect(freshest.readyState).toBe(WebSocket.OPEN);
    const logged = lines.filter((l) => String(l.msg).startsWith('every handshake slot taken'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ evictedSinceLastLog: 1, maxHandshakesInProgress: 2, graceMs: 200 });
    for (const ws of [fresh, freshest]) ws.terminate();
    await session.close();
    await replacing.close();
  });

  it('connectionParams that come after the handshake was replaced (or timed out) are not checked: the socket was closed 4408 already, and they were checked against a made-up nonce, so an honest agent a little late counted as a PROOF_INVALID (a security event) and a failed handshake of its address', async () => {
    await using srv = await startTestServer({
      config: { maxHandshakesInProgress: 1, handshakeGraceMs: 100, handshakeTimeoutMs: 60_000 },
    });
    const [late, newcomer] = await enrolledSims(srv, ['late', 'newcomer']);
    // A real agent's first message, made for the nonce of its own 101, sent only once it was replaced.
    const ws = new WebSocket(`${srv.url.replace(/^http/, 'ws')}/trpc?connectionParams=1`);
    ws.on('error', () => {});
    captureSessionNonce(ws);
    await new Promise((resolve) => ws.once('open', resolve));
    const proof = await createProof(late!.keyPair.privateJwk, late!.identityToken, {
      nonce: sessionNonceOf(ws),
      htu: new URL(srv.url).origin,
    });
    // It reads nothing more: the close frame the server sends when it is replaced stays unread.
    (ws as unknown as { _socket: Socket })._socket.pause();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const session = connectSim(srv.url, newcomer!);
    await session.waitFor('ready');
    await new Promise<void>((resolve) =>
      ws.send(
        JSON.stringify({ method: 'connectionParams', data: { identity: late!.identityToken, proof } }),
        () => resolve(),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const text = await (await fetch(`${srv.url}/metrics`)).text();
    expect(text).toMatch(/^connector_handshakes_evicted_total 1$/m);
    expect(text).not.toMatch(/^connector_session_refusals_total\{reason="PROOF_INVALID"\} [1-9]/m);
    ws.terminate();
    await session.close();
  });

  it('a socket that never sends its connectionParams is still closed with 4408 at the deadline, and its slot is freed', async () => {
    await using srv = await startTestServer({
      config: { maxHandshakesInProgress: 1, handshakeTimeoutMs: 300 },
    });
    const [agent] = await enrolledSims(srv, ['after-silence']);
    const silent = await holdHandshake(srv);
    expect((await metrics(srv)).inProgress).toBe(1);
    expect(await closed(silent)).toBe(CLOSE_CODES.HANDSHAKE_TIMEOUT);
    await eventually('slot released', async () => (await metrics(srv)).inProgress === 0);
    const session = connectSim(srv.url, agent!);
    await session.waitFor('ready');
    // The deadline no longer applies once the session is authenticated: it outlives it.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(session.closes).toEqual([]);
    expect(srv.server.hub.size).toBe(1);
    expect((await metrics(srv)).shed).toBe(0);
    await session.close();
  });
});

/** The server's gauge of connections that carry no authenticated session (the guard's count). */
async function unauthenticated(srv: TestServer): Promise<number> {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  return Number(/^connector_connections_unauthenticated (\d+)$/m.exec(text)?.[1] ?? Number.NaN);
}

/**
 * A websocket whose client stops reading once it has sent `first` (if anything): it never answers
 * the server's close frame, as a stranger holding connections would not.
 */
async function deafSocket(srv: TestServer, first?: string): Promise<WebSocket> {
  const ws = await holdHandshake(srv);
  if (first !== undefined) await new Promise<void>((resolve) => ws.send(first, () => resolve()));
  (ws as unknown as { _socket: Socket })._socket.pause();
  return ws;
}

describe('a socket the server turns away is cut if it does not answer the close frame', () => {
  it('past the connectionParams deadline, or refused: each connection is gone within seconds (the ws library waited 30 s for the answer), its slot free', async () => {
    await using srv = await startTestServer({ config: { handshakeTimeoutMs: 300 } });
    const baseline = await unauthenticated(srv);
    const sockets = [
      // Never sends its connectionParams: 4408 at the deadline.
      await deafSocket(srv),
      // Sends connectionParams that are refused: 4001 at once.
      await deafSocket(
        srv,
        JSON.stringify({ method: 'connectionParams', data: { identity: 'x', proof: 'y' } }),
      ),
    ];
    expect(await unauthenticated(srv)).toBe(baseline + 2);
    const start = Date.now();
    await eventually(
      'the turned-away connections cut',
      async () => (await unauthenticated(srv)) === baseline,
      6000,
    );
    expect(Date.now() - start).toBeLessThan(6000);
    for (const ws of sockets) ws.terminate();
  });
});

interface LogLine {
  level: 'info' | 'warn' | 'error';
  message: string;
  fields: Record<string, unknown>;
  at: number;
}

/** The agent's session loop in this process, against `serverUrl`, with its log lines kept. */
async function runAgentSession(enrolled: Enrolled, serverUrl: string) {
  const stateDir = await tempDir('ce-admission-agent-');
  const store = new IdentityStore(stateDir);
  await store.ensureDir();
  const lines: LogLine[] = [];
  const log =
    (level: LogLine['level']) =>
    (message: string, fields: Record<string, unknown> = {}) =>
      lines.push({ level, message, fields, at: performance.now() });
  const logger: AgentLogger = { info: log('info'), warn: log('warn'), error: log('error') };
  const controller = new AbortController();
  const identity = {
    connectorId: enrolled.connectorId,
    groupId: enrolled.groupId,
    server: serverUrl,
    identityToken: enrolled.identityToken,
    identityExpiresAt: enrolled.identityExpiresAt,
    privateJwk: enrolled.keyPair.privateJwk,
    enrolledAt: new Date().toISOString(),
  };
  // As the agent runs it: the identity on disk before the session (else it is put back, and says so).
  await store.save(identity);
  const exit = runSession({
    identity,
    store,
    transport: createTransport(null),
    logger,
    signal: controller.signal,
    hostFacts: hostFacts('admission'),
  });
  return {
    lines,
    connected: () =>
      eventually('agent connected', async () =>
        lines.find((l) => l.message.startsWith('connected to')),
      ).catch((error: Error) => {
        throw new Error(`${error.message}; agent log: ${JSON.stringify(lines)}`);
      }),
    async [Symbol.asyncDispose]() {
      controller.abort();
      // Bounded, so that a stuck agent shows as this, not as the test's own timeout hiding the cause.
      const stopped = await Promise.race([
        exit,
        new Promise((r) => setTimeout(() => r('not stopped in 10 s'), 10_000)),
      ]);
      await rm(stateDir, { recursive: true, force: true });
      expect(stopped, `agent log: ${JSON.stringify(lines)}`).toBe(0);
    },
  };
}

/**
 * A TCP front for the server that answers the first upgrades itself with `answers` (status and
 * Retry-After), recording when each came, and then passes connections through untouched.
 */
async function busyFront(
  upstreamPort: number,
  answers: Array<{ status: string; retryAfter: string; body?: string }>,
) {
  const arrivals: number[] = [];
  const sockets = new Set<Socket>();
  const front = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    arrivals.push(performance.now());
    const answer = answers[arrivals.length - 1];
    if (!answer) {
      const upstream = connect(upstreamPort, '127.0.0.1');
      sockets.add(upstream);
      upstream.on('error', () => socket.destroy());
      socket.on('close', () => upstream.destroy());
      upstream.on('close', () => socket.destroy());
      socket.pipe(upstream).pipe(socket);
      return;
    }
    let head = '';
    socket.on('data', (chunk) => {
      head += chunk;
      if (!head.includes('\r\n\r\n')) return;
      const body = answer.body ?? '';
      socket.end(
        `HTTP/1.1 ${answer.status}\r\nRetry-After: ${answer.retryAfter}\r\nConnection: close\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
  });
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(front.address() as { port: number }).port}`,
    arrivals,
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => front.close(resolve));
    },
  };
}

describe("the agent's reaction to a busy server", () => {
  it('reads Retry-After as seconds or an HTTP date, at most an hour; anything else is no hint', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfterMs('3', now)).toBe(3000);
    expect(parseRetryAfterMs(' 0 ', now)).toBe(0);
    expect(parseRetryAfterMs('Thu, 01 Jan 2026 00:00:07 GMT', now)).toBe(7000);
    expect(parseRetryAfterMs('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfterMs('999999999', now)).toBe(3_600_000);
    for (const bad of [undefined, '', 'soon', '-5', '1.5e3']) expect(parseRetryAfterMs(bad, now)).toBeNull();
  });

  it('shed by the real server (503 + Retry-After): the agent says so once, makes no attempt before the time it was given, then connects', async () => {
    await using srv = await startTestServer({ config: { maxHandshakesInProgress: 1 } });
    const [enrolled] = await enrolledSims(srv, ['patient']);
    const held = await holdHandshake(srv);
    await using agent = await runAgentSession(enrolled!, srv.url);
    const busy = await eventually('busy answer', async () =>
      agent.lines.find((l) => l.message.startsWith('the server is busy')),
    );
    held.close();
    const retryAfterSeconds = Number(busy.fields.retryAfterSeconds);
    expect(busy).toMatchObject({ level: 'warn', fields: { status: 503 } });
    expect(retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(retryAfterSeconds).toBeLessThanOrEqual(5);

    const connected = await agent.connected();
    expect(connected.at - busy.at).toBeGreaterThanOrEqual(retryAfterSeconds * 1000 - 20);
    expect(await metrics(srv)).toEqual({ inProgress: 0, shed: 1 });
    expect(srv.server.hub.size).toBe(1);
  });

  it('each 503 or 429 with Retry-After is waited out (plus jitter), one warning for all of them, no "cannot connect" or "disconnected" lines; then it connects through', async () => {
    await using srv = await startTestServer();
    const [enrolled] = await enrolledSims(srv, ['waiting']);
    // Longer than the jitter of those attempts (≤ 1 s, then ≤ 2 s): an agent ignoring it would come back sooner.
    await using front = await busyFront(srv.server.port, [
      { status: '503 Service Unavailable', retryAfter: '3' },
      { status: '429 Too Many Requests', retryAfter: '3' },
    ]);
    await using agent = await runAgentSession(enrolled!, front.url);
    await agent.connected();
    const [first, second, third] = front.arrivals;
    expect(front.arrivals).toHaveLength(3);
    expect(second! - first!).toBeGreaterThanOrEqual(3000);
    expect(third! - second!).toBeGreaterThanOrEqual(3000);
    const warnings = agent.lines.filter((l) => l.level !== 'info');
    expect(warnings.map((l) => l.message)).toEqual([
      'the server is busy; retrying after the time it asked for',
    ]);
    expect(warnings[0]!.fields).toEqual({ status: 503, retryAfterSeconds: 3 });
  });

  it('a replica not ready (its database down): the agent says not ready and why, as the 503 gave it', async () => {
    await using srv = await startTestServer();
    const [enrolled] = await enrolledSims(srv, ['told']);
    const why =
      'not ready: the change feed has lost its database connection (ECONNREFUSED: connect ECONNREFUSED); retry later';
    await using front = await busyFront(srv.server.port, [
      { status: '503 Service Unavailable', retryAfter: '1', body: `${why}\n` },
    ]);
    await using agent = await runAgentSession(enrolled!, front.url);
    await agent.connected();
    expect(agent.lines.filter((l) => l.level !== 'info')).toEqual([
      expect.objectContaining({
        message: 'the server is not ready; retrying after the time it asked for',
        fields: { status: 503, said: why, retryAfterSeconds: 1 },
      }),
    ]);
  });
});

describe('shutdown', () => {
  it('does not wait for ever on websockets that never finish: they are cut after a short grace', async () => {
    // Long handshake deadline: only the shutdown itself can end this socket.
    const srv = await startTestServer({ config: { handshakeTimeoutMs: 120_000 } });
    const socket = connect(srv.server.port, '127.0.0.1');
    socket.on('error', () => {});
    const upgraded = new Promise<void>((resolve) => {
      socket.once('data', (chunk) => {
        if (String(chunk).startsWith('HTTP/1.1 101')) resolve();
      });
    });
    socket.write(
      `GET /trpc?connectionParams=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n${UPGRADE_HEADERS}Sec-WebSocket-Version: 13\r\n\r\n`,
    );
    await upgraded;
    // The peer reads nothing and answers no close frame.
    socket.pause();
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const started = performance.now();
    await srv.stop();
    expect(performance.now() - started).toBeLessThan(10_000);
    await closed;
    await rm(srv.dataDir, { recursive: true, force: true });
  });
});
