import { rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import type { RateLimits } from '../server/services/rate-limit.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim, hostFacts, openSession } from './helpers/agent-sim.js';
import { eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { startTestServer, tempDir } from './helpers/server.js';

const RELAXED: RateLimits = {
  enrollPerAddressPerMinute: 10_000,
  enrollFailuresPerAddress: 10_000,
  enrollFailuresPerKey: 10_000,
  handshakeFailuresPerAddress: 10_000,
  adminAuthFailuresPerMinute: 10_000,
  sessionsPerConnectorPerMinute: 10_000,
};

// biome-ignore lint/suspicious/noExplicitAny: raw JSON off the wire
type Json = any;

/**
 * `agent.enroll` over plain HTTP from a chosen source address on loopback (127.0.0.2, …): how
 * many clients look to the server, without leaving the machine.
 */
async function enrollFrom(
  url: string,
  localAddress: string,
  provisioningKey: string,
): Promise<{ status: number; reason?: string; data?: Json }> {
  const keyPair = await generateAgentKeyPair();
  const body = JSON.stringify({
    provisioningKey,
    publicKey: keyPair.publicJwk,
    host: hostFacts(`from-${localAddress}`),
    agentVersion: 'test',
  });
  const { port } = new URL(url);
  const text = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        localAddress,
        method: 'POST',
        path: '/trpc/agent.enroll',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        agent: false,
      },
      (res) => {
        let out = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          out += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: out }));
      },
    );
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.end(body);
  });
  const parsed = JSON.parse(text.text);
  return parsed.error
    ? { status: text.status, reason: parsed.error.data?.reason, data: parsed.error.data }
    : { status: text.status, data: parsed.result.data };
}

/** The raw status line the server answers to `head` (a request or upgrade written by hand). */
function rawStatusLine(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let out = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk) => {
      out += chunk;
    });
    socket.on('error', (error) => (out ? resolve(out.split('\r\n')[0]!) : reject(error)));
    socket.on('close', () => resolve(out.split('\r\n')[0] ?? ''));
    socket.setTimeout(10_000, () => socket.destroy());
    socket.end(head);
  });
}

async function groupWithKey(srv: Awaited<ReturnType<typeof startTestServer>>, name = 'Limited') {
  const group = await srv.admin.groups.create.mutate({ name });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { group, key, keyId: key.split('_')[1]! };
}

describe('abuse limits on the unauthenticated paths', () => {
  it('enrollments per source address: past the limit → RATE_LIMITED (429) with retryAfterSeconds, audited as a security event; another address is unaffected', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...RELAXED, enrollPerAddressPerMinute: 3 } },
    });
    const { key, keyId } = await groupWithKey(srv);
    for (let i = 0; i < 3; i++) expect((await enrollSim(srv.url, key, `ok-${i}`)).ok).toBe(true);
    const refused = await enrollSim(srv.url, key, 'one-too-many');
    expect(refused).toMatchObject({ status: 429, ok: false, reason: 'RATE_LIMITED' });
    const retryAfter = refused.error.data.retryAfterSeconds;
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);

    expect(await enrollFrom(srv.url, '127.0.0.2', key)).toMatchObject({ status: 200 });

    const audit = await srv.admin.audit.list.query({ type: 'enrollment.refused' });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      outcome: 'refused',
      reason: 'RATE_LIMITED',
      security: true,
      remoteAddress: '127.0.0.1',
      keyId: `pk_${keyId}`,
    });
    expect((await srv.admin.connectors.counts.query({})).total).toBe(4);
  });

  it('failed enrollments per source address: after the allowance guesses of any key id are refused from there, the genuine key is not (a stranger behind a NAT cannot keep its hosts from enrolling)', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...RELAXED, enrollFailuresPerAddress: 4 } },
    });
    const { key } = await groupWithKey(srv);
    const reasons: string[] = [];
    for (let i = 0; i < 6; i++)
      reasons.push(
        (await enrollFrom(srv.url, '127.0.0.9', `cpk_guess${String(i).padStart(7, '0')}_${'x'.repeat(43)}`))
          .reason!,
      );
    expect(reasons).toEqual([
      'KEY_INVALID',
      'KEY_INVALID',
      'KEY_INVALID',
      'KEY_INVALID',
      'RATE_LIMITED',
      'RATE_LIMITED',
    ]);
    // The genuine key from that address goes through; a guess from there still waits.
    expect((await enrollFrom(srv.url, '127.0.0.9', key)).status).toBe(200);
    expect((await enrollFrom(srv.url, '127.0.0.10', key)).status).toBe(200);
    const guess = `cpk_guess${'9'.repeat(7)}_${'x'.repeat(43)}`;
    expect((await enrollFrom(srv.url, '127.0.0.9', guess)).reason).toBe('RATE_LIMITED');
  });

  it('failed attempts naming one key id from 40 source addresses still hit the per-key wall, which the genuine key goes through; each refusal is audited with its address', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...RELAXED, enrollFailuresPerKey: 10 } },
    });
    const { key, keyId } = await groupWithKey(srv);
    const secret = key.split('_').slice(2).join('_');
    const forged = `cpk_${keyId}_${secret.startsWith('A') ? 'B' : 'A'}${secret.slice(1)}`;
    const answers: Array<{ status: number; reason?: string; data?: Json }> = [];
    // One at a time, so the count is exact (concurrent guesses may overshoot by the number in flight).
    for (let host = 2; host < 42; host++) answers.push(await enrollFrom(srv.url, `127.0.0.${host}`, forged));
    expect(answers.slice(0, 10).map((a) => a.reason)).toEqual(Array(10).fill('KEY_INVALID'));
    for (const answer of answers.slice(10)) {
      expect(answer).toMatchObject({ status: 429, reason: 'RATE_LIMITED' });
      expect(answer.data.retryAfterSeconds).toBeGreaterThan(0);
      expect(answer.data.retryAfterSeconds).toBeLessThanOrEqual(600);
    }
    // The wall is for guesses: key ids are no secret (every enrolled host's token carries its key's),
    // so a wall the genuine key could not pass would let anyone keep the group from enrolling.
    expect((await enrollFrom(srv.url, '127.0.0.99', forged)).reason).toBe('RATE_LIMITED');
    expect((await enrollFrom(srv.url, '127.0.0.99', key)).status).toBe(200);

    const refusals = (await srv.admin.audit.list.query({ type: 'enrollment.refused', limit: 500 })).filter(
      (e) => e.reason === 'RATE_LIMITED',
    );
    expect(refusals).toHaveLength(31);
    for (const event of refusals) expect(event).toMatchObject({ security: true, keyId: `pk_${keyId}` });
    expect(new Set(refusals.map((e) => e.remoteAddress)).size).toBe(31);
    expect((await srv.admin.connectors.counts.query({})).total).toBe(1);
  });

  it('refused session handshakes per address: then handshakes from there that prove nothing are closed with 4429 RATE_LIMITED, while a genuine agent behind the same address still gets in (one stranger behind a NAT cannot keep the fleet out)', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...RELAXED, handshakeFailuresPerAddress: 3 } },
    });
    const { key } = await groupWithKey(srv);
    const stateDir = await tempDir('ce-limited-agent-');
    const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'patient'], stateDir);
    await waitConnected(srv.admin, 'patient');
    first.kill('SIGTERM');
    expect((await first.exited).code).toBe(0);
    const identity = await readIdentity(stateDir);

    for (let i = 0; i < 3; i++) {
      const bad = openSession(srv.url, { identity: 'not.a.jwt', proof: 'nope' });
      expect(await bad.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'IDENTITY_INVALID' });
      await bad.close();
    }
    const limited = openSession(srv.url, { identity: 'not.a.jwt', proof: 'nope' });
    const close = await limited.waitForClose();
    expect(close.code).toBe(CLOSE_CODES.RATE_LIMITED);
    expect(close.reason).toMatch(/^RATE_LIMITED retry-after=\d+$/);
    await limited.close();
    // A copied identity token without its private key proves nothing either: told to wait too.
    const copied = openSession(srv.url, { identity: identity!.identityToken, proof: 'nope' });
    expect((await copied.waitForClose()).code).toBe(CLOSE_CODES.RATE_LIMITED);
    await copied.close();
    // Another address is not affected.
    const elsewhere = await enrollSim(srv.url, key, 'elsewhere');
    const fromTwo = connectSim(srv.url, elsewhere.enrolled!, { localAddress: '127.0.0.2' });
    await fromTwo.waitFor('ready');
    await fromTwo.close();

    // The genuine agent from the blocked address: its identity and proof check out, so it is let in.
    const again = spawnAgent(['--server', srv.url], stateDir);
    await waitConnected(srv.admin, 'patient');
    expect(again.child.exitCode).toBeNull();
    again.kill('SIGTERM');
    expect((await again.exited).code).toBe(0);
    expect((await readIdentity(stateDir))?.identityToken).toBe(identity?.identityToken);
    // Its address is still blocked for the stranger.
    const still = openSession(srv.url, { identity: 'not.a.jwt', proof: 'nope' });
    expect((await still.waitForClose()).code).toBe(CLOSE_CODES.RATE_LIMITED);
    await still.close();
    // A revoked connector's host behind it is told so (final), not asked to retry.
    const doomed = (await enrollSim(srv.url, (await groupWithKey(srv, 'Doomed')).key, 'doomed')).enrolled!;
    await srv.admin.connectors.revoke.mutate({ connectorId: doomed.connectorId });
    const told = connectSim(srv.url, doomed);
    expect(await told.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'CONNECTOR_REVOKED' });
    await told.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('live sessions per source address: past maxSessionsPerAddress → 4429 RATE_LIMITED; replacing its own session, another address, or a freed slot are fine', async () => {
    await using srv = await startTestServer({
      // One refused handshake would already exhaust this allowance: a full address must not count.
      config: { maxSessionsPerAddress: 2, rateLimits: { ...RELAXED, handshakeFailuresPerAddress: 1 } },
    });
    const { key } = await groupWithKey(srv);
    const [a, b, c] = await Promise.all(
      ['a', 'b', 'c'].map(async (n) => (await enrollSim(srv.url, key, n)).enrolled!),
    );
    const sessionA = connectSim(srv.url, a!);
    const sessionB = connectSim(srv.url, b!);
    await sessionA.waitFor('ready');
    await sessionB.waitFor('ready');

    const third = connectSim(srv.url, c!);
    expect(await third.waitForClose()).toEqual({ code: CLOSE_CODES.RATE_LIMITED, reason: 'RATE_LIMITED' });
    expect(third.events).toEqual([]);
    await third.close();
    expect(srv.server.hub.size).toBe(2);

    // A's reconnect from the same address replaces its session rather than needing a new slot.
    const sessionA2 = connectSim(srv.url, a!);
    await sessionA2.waitFor('ready');
    expect((await sessionA.waitForClose()).code).toBe(CLOSE_CODES.REPLACED);

    const fromTwo = connectSim(srv.url, c!, { localAddress: '127.0.0.2' });
    await fromTwo.waitFor('ready');
    await fromTwo.close();

    await sessionB.close();
    await eventually('B detached', async () => srv.server.hub.size === 1);
    const retried = connectSim(srv.url, c!);
    await retried.waitFor('ready', 10_000);
    expect(srv.server.hub.size).toBe(2);

    const refusals = await srv.admin.audit.list.query({ type: 'session.refused' });
    expect(refusals.map((e) => e.reason)).toEqual(['RATE_LIMITED']);
    await Promise.all([sessionA.close(), sessionA2.close(), retried.close()]);
  });

  it('request headers beyond 16 KB are refused with 431 before any handler runs, on plain requests and websocket upgrades', async () => {
    await using srv = await startTestServer();
    const { port } = srv.server;
    const big = 'a'.repeat(20 * 1024);
    const small = 'a'.repeat(8 * 1024);
    const get = (value: string) =>
      `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ${value}\r\nConnection: close\r\n\r\n`;
    const upgrade = (value: string) =>
      `GET /trpc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Padding: ${value}\r\n\r\n`;
    expect(await rawStatusLine(port, get(big))).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(await rawStatusLine(port, upgrade(big))).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(await rawStatusLine(port, get(small))).toBe('HTTP/1.1 200 OK');
    // Many small headers adding up past the limit are refused the same way.
    const many = Array.from({ length: 400 }, (_, i) => `X-H${i}: ${'b'.repeat(50)}\r\n`).join('');
    expect(await rawStatusLine(port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n${many}\r\n`)).toBe(
      'HTTP/1.1 431 Request Header Fields Too Large',
    );
  });
});
