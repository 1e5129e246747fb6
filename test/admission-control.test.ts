import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim, openSession } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { startTestServer, type TestServer } from './helpers/server.js';

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
  it('past the cap an upgrade is answered 503 with Retry-After at once and counted; admin calls still work; once the held handshakes end, an agent connects', async () => {
    await using srv = await startTestServer({ config: { maxHandshakesInProgress: 2 } });
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
