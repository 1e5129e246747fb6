import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { generateAgentKeyPair } from '../agent/proof.js';
import { captureSessionNonce, sessionNonceOf } from '../agent/transport.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import {
  connectSim,
  type Enrolled,
  enrollSim,
  hostFacts,
  openSession,
  proveWith,
  type SimParams,
} from './helpers/agent-sim.js';
import { eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { startTestServer, type TestServer, tempDir } from './helpers/server.js';

async function enrolledAgent() {
  const srv = await startTestServer();
  const group = await srv.admin.groups.create.mutate({ name: 'Target' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  const { enrolled } = await enrollSim(srv.url, key);
  return { srv, group, enrolled: enrolled! };
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const decode = (token: string) => {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h!, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(p!, 'base64url').toString()),
  };
};

/** Opens a session with the given params and expects a final refusal with `reason`, and no live session left. */
async function expectRefused(
  srv: Awaited<ReturnType<typeof startTestServer>>,
  enrolled: Enrolled,
  params: SimParams,
  reason: string,
) {
  const session = openSession(srv.url, params);
  const close = await session.waitForClose();
  expect(close).toEqual({ code: CLOSE_CODES.REFUSED, reason });
  expect(session.events).toEqual([]);
  expect(srv.server.hub.size).toBe(0);
  const { connection } = await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId });
  expect(connection).not.toBe('connected');
  await session.close();
}

describe('session handshake attacks: each is refused with its reason and leaves no live session', () => {
  it('accepts the genuine identity with a fresh proof', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const session = connectSim(srv.url, enrolled);
    expect(await session.waitFor('ready')).toMatchObject({
      type: 'ready',
      connectorId: enrolled.connectorId,
      status: 'enabled',
    });
    expect(srv.server.hub.size).toBe(1);
    await session.close();
  });

  it('a valid identity with no proof, or an empty one → PROOF_INVALID / IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    await expectRefused(srv, enrolled, { identity: enrolled.identityToken, proof: 'x' }, 'PROOF_INVALID');
    const noProof = openSession(srv.url, { identity: enrolled.identityToken } as {
      identity: string;
      proof: string;
    });
    expect(await noProof.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'IDENTITY_INVALID' });
    await noProof.close();
    expect(srv.server.hub.size).toBe(0);
  });

  it('a proof signed by another key → PROOF_INVALID (a copied token alone is useless)', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const thief = await generateAgentKeyPair();
    await expectRefused(
      srv,
      enrolled,
      {
        identity: enrolled.identityToken,
        proof: proveWith(thief.privateJwk, enrolled.identityToken),
      },
      'PROOF_INVALID',
    );
  });

  it('a replayed proof → PROOF_INVALID, on the same server and after a restart (it signs the nonce of the connection it was made for)', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const first = connectSim(srv.url, enrolled) as ReturnType<typeof openSession>;
    await first.waitFor('ready');
    await first.close();
    const [captured] = first.sentProofs;
    expect(captured).toBeTruthy();
    // Within the proof's ±5 min: only the nonce binding refuses it.
    await expectRefused(
      srv,
      enrolled,
      { identity: enrolled.identityToken, proof: captured! },
      'PROOF_INVALID',
    );
    await srv.stop();
    const restarted = await startTestServer({ dataDir: srv.dataDir, clock: srv.clock });
    await using __ = restarted;
    await expectRefused(
      restarted,
      enrolled,
      { identity: enrolled.identityToken, proof: captured! },
      'PROOF_INVALID',
    );
    // The genuine agent still gets in: a fresh proof signs the new connection's nonce.
    const genuine = connectSim(restarted.url, enrolled);
    await genuine.waitFor('ready');
    await genuine.close();
  });

  it('a stale proof (iat beyond the skew) and a proof bound to another token → PROOF_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    srv.clock.advance(10 * 60_000);
    await expectRefused(
      srv,
      enrolled,
      {
        identity: enrolled.identityToken,
        proof: proveWith(enrolled.keyPair.privateJwk, enrolled.identityToken),
      },
      'PROOF_INVALID',
    );
    srv.clock.advance(-10 * 60_000);
    await expectRefused(
      srv,
      enrolled,
      {
        identity: enrolled.identityToken,
        proof: proveWith(enrolled.keyPair.privateJwk, `${enrolled.identityToken}x`),
      },
      'PROOF_INVALID',
    );
  });

  it('a tampered token (claims changed, signature kept) → IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const [h, p, s] = enrolled.identityToken.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const tampered = `${h}.${b64({ ...payload, sub: 'con_someoneelse0000' })}.${s}`;
    await expectRefused(
      srv,
      enrolled,
      { identity: tampered, proof: proveWith(enrolled.keyPair.privateJwk, tampered) },
      'IDENTITY_INVALID',
    );
  });

  it('a token signed by an unknown key with the right kid → IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const { header, payload } = decode(enrolled.identityToken);
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const forged = await new SignJWT(payload).setProtectedHeader(header).sign(privateKey);
    await expectRefused(
      srv,
      enrolled,
      { identity: forged, proof: proveWith(enrolled.keyPair.privateJwk, forged) },
      'IDENTITY_INVALID',
    );
  });

  it('alg: none → IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const { header, payload } = decode(enrolled.identityToken);
    const unsigned = `${b64({ ...header, alg: 'none' })}.${b64(payload)}.`;
    await expectRefused(
      srv,
      enrolled,
      { identity: unsigned, proof: proveWith(enrolled.keyPair.privateJwk, unsigned) },
      'IDENTITY_INVALID',
    );
  });

  it('an identity of a revoked connector → CONNECTOR_REVOKED, for ever; of a deleted one → CONNECTOR_NOT_FOUND', async () => {
    const { srv, group, enrolled } = await enrolledAgent();
    await using _ = srv;
    await srv.admin.connectors.revoke.mutate({ connectorId: enrolled.connectorId });
    const fresh = async () => ({
      identity: enrolled.identityToken,
      proof: proveWith(enrolled.keyPair.privateJwk, enrolled.identityToken),
    });
    const session = openSession(srv.url, await fresh());
    expect(await session.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'CONNECTOR_REVOKED' });
    await session.close();
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const other = (await enrollSim(srv.url, key)).enrolled!;
    await srv.admin.connectors.delete.mutate({ connectorId: other.connectorId });
    // Tried again and again (a copy of the identity in a loop): refused each time, and the deletion
    // confirmed once, not once a handshake.
    for (let i = 0; i < 4; i++) {
      const deleted = openSession(srv.url, {
        identity: other.identityToken,
        proof: proveWith(other.keyPair.privateJwk, other.identityToken),
      });
      expect(await deleted.waitForClose()).toEqual({
        code: CLOSE_CODES.REFUSED,
        reason: 'CONNECTOR_NOT_FOUND',
      });
      await deleted.close();
    }
    expect(srv.server.hub.size).toBe(0);
    const confirmed = await srv.admin.audit.list.query({ type: 'connector.deletion_confirmed' });
    expect(confirmed).toMatchObject([{ connectorId: other.connectorId, details: { via: 'handshake' } }]);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_session_refusals_total\{reason="CONNECTOR_NOT_FOUND"\} 4$/m);
  });

  it('an expired identity → IDENTITY_EXPIRED', async () => {
    const srv = await startTestServer({ config: { identityTtlMs: 60_000 } });
    await using _ = srv;
    const group = await srv.admin.groups.create.mutate({ name: 'Short' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = (await enrollSim(srv.url, key)).enrolled!;
    srv.clock.advance(61_000);
    await expectRefused(
      srv,
      enrolled,
      {
        identity: enrolled.identityToken,
        proof: proveWith(enrolled.keyPair.privateJwk, enrolled.identityToken),
      },
      'IDENTITY_EXPIRED',
    );
  });

  it('an identity whose cnf.jkt names the attacker’s key, signed by the attacker → IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const { header, payload } = decode(enrolled.identityToken);
    const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const jwk = await exportJWK(attacker.publicKey);
    const forged = await new SignJWT({ ...payload, cnf: { jkt: 'attacker' } })
      .setProtectedHeader({ ...header, jwk })
      .sign(attacker.privateKey);
    await expectRefused(srv, enrolled, { identity: forged, proof: 'x' }, 'IDENTITY_INVALID');
  });
});

describe('refused handshakes in the log', () => {
  it('a flood of junk handshakes writes a line per reason, not one each: the next line counts the ones between', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    await using srv = await startTestServer({ logger });
    const refused = () => lines.filter((l) => l.msg === 'session refused');
    for (let i = 0; i < 30; i++) {
      const junk = openSession(srv.url, { identity: 'x', proof: 'y' });
      await junk.waitForClose();
      await junk.close();
    }
    // IDENTITY_INVALID until the address is limited, then RATE_LIMITED: one line each.
    const reasons = refused().map((l) => l.reason);
    expect(reasons.length).toBeGreaterThanOrEqual(1);
    expect(reasons.length).toBeLessThanOrEqual(2);
    expect(new Set(reasons).size).toBe(reasons.length);
    expect(reasons[0]).toBe('IDENTITY_INVALID');
    // Every one counted all the same.
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    const counted = [...metrics.matchAll(/^connector_session_refusals_total\{reason="\w+"\} (\d+)$/gm)];
    expect(counted.reduce((sum, m) => sum + Number(m[1]), 0)).toBe(30);
  });
});

describe('one identity reconnecting in a loop', () => {
  it('is audited 11 times in its first minute (its first connect, then 10 a window), the rest counted into one summary event: it cannot rotate the security events out of the audit log', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const connects = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const session = connectSim(srv.url, enrolled);
        await session.waitFor('ready');
        await session.close();
      }
    };
    const connected = () => srv.admin.audit.list.query({ type: 'session.connected', limit: 1000 });
    await connects(25);
    expect(await connected()).toHaveLength(11);
    // The window ends: its summary is written with the next connect (or by a timer, or at stop).
    srv.clock.advance(60_000);
    await connects(1);
    const events = await connected();
    expect(events).toHaveLength(13);
    const summary = events.find((e) => (e.details as { suppressed?: number }).suppressed !== undefined);
    expect(summary).toMatchObject({ connectorId: enrolled.connectorId, details: { suppressed: 14 } });
    // Every connect is counted: 11 + 14 in the first minute, then one.
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_session_connects_total 26$/m);
  });

  it('replacing its own session each time: the replacements past the window are counted into the summary, a security event naming the addresses', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    let previous = connectSim(srv.url, enrolled);
    await previous.waitFor('ready');
    for (let i = 0; i < 24; i++) {
      // The next one opens before the last is closed: each connect replaces a live session.
      const next = connectSim(srv.url, enrolled);
      await next.waitFor('ready');
      await previous.close();
      previous = next;
    }
    await previous.close();
    const replaced = () => srv.admin.audit.list.query({ type: 'session.replaced', limit: 1000 });
    expect((await replaced()).length).toBe(10);
    srv.clock.advance(60_000);
    const last = connectSim(srv.url, enrolled);
    await last.waitFor('ready');
    await last.close();
    const summary = (await srv.admin.audit.list.query({ type: 'session.connected', limit: 1000 })).find(
      (e) => (e.details as { suppressed?: number }).suppressed !== undefined,
    );
    expect(summary).toMatchObject({
      security: true,
      connectorId: enrolled.connectorId,
      details: { suppressed: 14, replaced: 14, addresses: ['127.0.0.1'] },
    });
  });
});

describe('sessions one connector may open a minute', () => {
  it('past its allowance a connector is refused 4429 with a retry-after, before any signature is checked; strangers naming it cannot use the allowance up, other connectors are not touched, and the next minute lets it in', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...DEFAULT_RATE_LIMITS, sessionsPerConnectorPerMinute: 3 } },
    });
    const group = await srv.admin.groups.create.mutate({ name: 'Looping' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const looping = (await enrollSim(srv.url, key, 'looping')).enrolled!;
    const other = (await enrollSim(srv.url, key, 'other')).enrolled!;
    const [h, p] = looping.identityToken.split('.');
    const forged = `${h}.${p}.${Buffer.alloc(64, 7).toString('base64url')}`;
    const junk = { identity: forged, proof: proveWith(looping.keyPair.privateJwk, forged) };
    const connectOnce = async (enrolled: Enrolled) => {
      const session = connectSim(srv.url, enrolled);
      await session.waitFor('ready');
      await session.close();
    };

    // A stranger's handshakes naming the connector prove nothing and are not counted.
    for (let i = 0; i < 5; i++) {
      const stranger = openSession(srv.url, junk);
      expect(await stranger.waitForClose()).toEqual({
        code: CLOSE_CODES.REFUSED,
        reason: 'IDENTITY_INVALID',
      });
      await stranger.close();
    }
    for (let i = 0; i < 3; i++) await connectOnce(looping);
    srv.clock.advance(20_000);
    const limited = connectSim(srv.url, looping);
    expect(await limited.waitForClose()).toEqual({
      code: CLOSE_CODES.RATE_LIMITED,
      reason: 'RATE_LIMITED retry-after=40',
    });
    expect(limited.events).toEqual([]);
    await limited.close();
    // Junk naming the limited connector is refused the same way, with no signature checked.
    const stranger = openSession(srv.url, junk);
    expect((await stranger.waitForClose()).reason).toBe('RATE_LIMITED retry-after=40');
    await stranger.close();
    expect(srv.server.hub.size).toBe(0);
    await connectOnce(other);

    srv.clock.advance(40_000);
    await connectOnce(looping);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_session_refusals_total\{reason="RATE_LIMITED"\} 2$/m);
    expect(metrics).toMatch(/^connector_session_connects_total 5$/m);
  });

  it('a real agent refused so keeps its identity and waits the time it was given', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...DEFAULT_RATE_LIMITS, sessionsPerConnectorPerMinute: 1 } },
    });
    const group = await srv.admin.groups.create.mutate({ name: 'Patient' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const stateDir = await tempDir('ce-connect-rate-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'patient'], stateDir);
    const { id } = await waitConnected(srv.admin, 'patient');
    // Its socket dies (a network blip): it reconnects at once, its second session this minute.
    srv.server.hub.liveSession(id)!.ws.terminate();
    await eventually('the agent told to wait', async () =>
      /the server closed the session for now; retrying in 6\d\.\d s .*retry-after=60/.test(agent.output()),
    );
    expect(srv.server.hub.size).toBe(0);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    expect((await readIdentity(stateDir))?.connectorId).toBe(id);
  });
});

describe('messages one session may send', () => {
  it('past 100 in 10 s the socket is closed 4429 with a retry-after within the window; the connector is not revoked and connects again', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const session = connectSim(srv.url, enrolled);
    await session.waitFor('ready');
    let answered = 0;
    for (let i = 0; i < 150 && session.closes.length === 0; i++) {
      try {
        await session.client.agent.report.mutate({ host: hostFacts(`host-${i % 2}`) });
        answered++;
      } catch {
        break;
      }
    }
    const close = await session.waitForClose();
    expect(close.code).toBe(CLOSE_CODES.RATE_LIMITED);
    const retryAfter = Number(/^RATE_LIMITED retry-after=(\d+)$/.exec(close.reason)?.[1]);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(10);
    // The subscription's message and the reports: 100 in all, whichever came first.
    expect(answered).toBeGreaterThanOrEqual(98);
    expect(answered).toBeLessThanOrEqual(100);
    await session.close();
    expect(await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId })).toMatchObject({
      status: 'enabled',
    });
    const again = connectSim(srv.url, enrolled);
    await again.waitFor('ready');
    await again.client.agent.report.mutate({ host: hostFacts('calm') });
    expect(again.closes).toEqual([]);
    await again.close();
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metrics).toMatch(/^connector_agent_messages_limited_total 1$/m);
  });
});

describe('messages one session may send, sent at once', () => {
  /** A raw agent socket with a valid handshake, and `batches` of 10 host reports sent with no wait for answers. */
  async function burst(srv: TestServer, enrolled: Enrolled, batches: number, after: 'handshake' | 'ready') {
    const ws = new WebSocket(`${srv.url.replace(/^http/, 'ws')}/trpc?connectionParams=1`);
    captureSessionNonce(ws);
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    await new Promise((resolve) => ws.once('open', resolve));
    const binding = { nonce: sessionNonceOf(ws), htu: new URL(srv.url).origin };
    const proof = await proveWith(enrolled.keyPair.privateJwk, enrolled.identityToken)(binding);
    ws.send(
      JSON.stringify({ method: 'connectionParams', data: { identity: enrolled.identityToken, proof } }),
    );
    ws.send(JSON.stringify({ id: 0, method: 'subscription', params: { path: 'agent.session' } }));
    if (after === 'ready')
      await new Promise<void>((resolve) =>
        ws.on('message', (m) => String(m).includes('"ready"') && resolve()),
      );
    for (let i = 1; i <= batches; i++)
      ws.send(
        JSON.stringify(
          Array.from({ length: 10 }, (_, j) => ({
            id: i * 10 + j,
            method: 'mutation',
            params: { path: 'agent.report', input: { host: hostFacts(`burst-${i}-${j}`) } },
          })),
        ),
      );
    return closed;
  }
  const reports = async (srv: TestServer) =>
    Number(
      /^connector_host_reports_total (\d+)$/m.exec(await (await fetch(`${srv.url}/metrics`)).text())?.[1],
    );

  for (const after of ['ready', 'handshake'] as const)
    it(`3,000 messages of 10 calls sent at once (after ${after === 'ready' ? 'the ready event' : 'the handshake, before its verdict'}): closed 4429, and only the first 100 run`, async () => {
      const { srv, enrolled } = await enrolledAgent();
      await using _ = srv;
      expect(await burst(srv, enrolled, 3000, after)).toBe(CLOSE_CODES.RATE_LIMITED);
      // The 100th message (the subscription's first) and the one past the limit, 10 calls each at most.
      expect(await reports(srv)).toBeLessThanOrEqual(1010);
    });
});

describe('one live session per connector (behaviour 12)', () => {
  it('a second session replaces the first, telling it the new address, and the audit log flags it with both addresses', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const first = connectSim(srv.url, enrolled);
    await first.waitFor('ready');
    const second = connectSim(srv.url, enrolled, { localAddress: '127.0.0.2' });
    await second.waitFor('ready');
    expect(await first.waitForClose()).toEqual({
      code: CLOSE_CODES.REPLACED,
      reason: 'SESSION_REPLACED by=127.0.0.2',
    });
    expect(srv.server.hub.size).toBe(1);
    const [replaced] = await srv.admin.audit.list.query({ type: 'session.replaced' });
    expect(replaced).toMatchObject({
      connectorId: enrolled.connectorId,
      remoteAddress: '127.0.0.2',
      security: true,
      details: { previousRemoteAddress: '127.0.0.1', newRemoteAddress: '127.0.0.2' },
    });
    expect((await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId })).remoteAddress).toBe(
      '127.0.0.2',
    );
    await second.close();
    await first.close();
  });

  it('a socket that never sends its connectionParams is closed after the handshake deadline', async () => {
    const srv = await startTestServer({ config: { handshakeTimeoutMs: 200 } });
    await using _ = srv;
    const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/trpc?connectionParams=1`);
    const closed = await new Promise<{ code: number }>((resolve) =>
      ws.on('close', (code) => resolve({ code })),
    );
    expect(closed.code).toBe(CLOSE_CODES.HANDSHAKE_TIMEOUT);
  });

  it('refuses websocket upgrades on other paths', async () => {
    const srv = await startTestServer();
    await using _ = srv;
    const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/other`);
    const outcome = await new Promise<string>((resolve) => {
      ws.on('open', () => resolve('open'));
      ws.on('error', () => resolve('error'));
    });
    expect(outcome).toBe('error');
  });
});

describe('JWT attacks beyond forgery', () => {
  async function refusedWith(identity: string, reason: string, code: number = CLOSE_CODES.REFUSED) {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const session = openSession(srv.url, {
      identity,
      proof: proveWith(enrolled.keyPair.privateJwk, identity),
    });
    expect(await session.waitForClose()).toEqual({ code, reason });
    expect(srv.server.hub.size).toBe(0);
    await session.close();
    return enrolled;
  }

  async function genuine() {
    const { srv, enrolled } = await enrolledAgent();
    const jwks = (await (await fetch(`${srv.url}/.well-known/jwks.json`)).json()) as {
      keys: Array<Record<string, string>>;
    };
    await srv[Symbol.asyncDispose]();
    return { enrolled, jwks, ...decode(enrolled.identityToken) };
  }

  it('algorithm confusion: HS256 signed with the server public key as the HMAC secret → IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const jwks = (await (await fetch(`${srv.url}/.well-known/jwks.json`)).json()) as {
      keys: Array<Record<string, string>>;
    };
    const { header, payload } = decode(enrolled.identityToken);
    const secret = new TextEncoder().encode(JSON.stringify(jwks.keys[0]));
    const confused = await new SignJWT(payload).setProtectedHeader({ ...header, alg: 'HS256' }).sign(secret);
    const session = openSession(srv.url, {
      identity: confused,
      proof: proveWith(enrolled.keyPair.privateJwk, confused),
    });
    expect(await session.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'IDENTITY_INVALID' });
    await session.close();
  });

  it('a kid pointing elsewhere (unknown kid, a URL, a path) → IDENTITY_UNKNOWN_SIGNER, closed 4401 (not final): nothing is fetched, and the session is refused all the same', async () => {
    const { header, payload } = await genuine();
    const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    for (const kid of ['unknown-kid', 'https://attacker.example/jwks.json', '../../etc/passwd']) {
      const token = await new SignJWT(payload).setProtectedHeader({ ...header, kid }).sign(privateKey);
      await refusedWith(token, 'IDENTITY_UNKNOWN_SIGNER', CLOSE_CODES.SIGNER_UNKNOWN);
    }
  });

  it('a crit header the server does not understand → IDENTITY_INVALID, even with a valid signature', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    // Re-sign the genuine claims with the server's own key (read from its data dir) plus a crit
    // header; jose will not sign that, so sign by hand as an attacker would.
    const { readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { createPrivateKey, sign } = await import('node:crypto');
    const { importJWK } = await import('jose');
    const stored = JSON.parse(await readFile(join(srv.dataDir, 'signing-keys.json'), 'utf8'));
    const keyObject = createPrivateKey({ key: stored.keys[0].privateJwk, format: 'jwk' });
    const { header, payload } = decode(enrolled.identityToken);
    const signingInput = `${b64({ ...header, crit: ['x-must-understand'], 'x-must-understand': true })}.${b64(payload)}`;
    const withCrit = `${signingInput}.${sign(null, Buffer.from(signingInput), keyObject).toString('base64url')}`;
    const key = await importJWK(stored.keys[0].privateJwk, 'EdDSA');
    const session = openSession(srv.url, {
      identity: withCrit,
      proof: proveWith(enrolled.keyPair.privateJwk, withCrit),
    });
    expect(await session.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'IDENTITY_INVALID' });
    await session.close();
    // The same key without crit works: the refusal is the crit header's doing.
    const plain = await new SignJWT(payload).setProtectedHeader(header).sign(key);
    const ok = openSession(srv.url, {
      identity: plain,
      proof: proveWith(enrolled.keyPair.privateJwk, plain),
    });
    await ok.waitFor('ready');
    await ok.close();
  });

  it('wrong audience or issuer, even signed by the server key → IDENTITY_INVALID', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const { readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { importJWK } = await import('jose');
    const stored = JSON.parse(await readFile(join(srv.dataDir, 'signing-keys.json'), 'utf8'));
    const key = await importJWK(stored.keys[0].privateJwk, 'EdDSA');
    const { header, payload } = decode(enrolled.identityToken);
    for (const change of [{ aud: 'someone-else' }, { iss: 'https://attacker.example' }]) {
      const token = await new SignJWT({ ...payload, ...change }).setProtectedHeader(header).sign(key);
      const session = openSession(srv.url, {
        identity: token,
        proof: proveWith(enrolled.keyPair.privateJwk, token),
      });
      expect(await session.waitForClose(), JSON.stringify(change)).toEqual({
        code: CLOSE_CODES.REFUSED,
        reason: 'IDENTITY_INVALID',
      });
      await session.close();
    }
  });

  it('a huge token is refused without being parsed, and the server stays up', async () => {
    const { srv, enrolled } = await enrolledAgent();
    await using _ = srv;
    const huge = `${'A'.repeat(60_000)}.${'B'.repeat(60_000)}.${'C'.repeat(60_000)}`;
    const session = openSession(srv.url, { identity: huge, proof: 'x' });
    const close = await session.waitForClose();
    // Over the websocket message limit the socket is cut (1009); under it, the schema refuses it.
    expect([1009, CLOSE_CODES.REFUSED]).toContain(close.code);
    await session.close();
    const fine = connectSim(srv.url, enrolled);
    await fine.waitFor('ready');
    await fine.close();
    expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);
  });
});
