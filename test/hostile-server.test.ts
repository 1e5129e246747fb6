import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { enroll } from '../agent/enroll.js';
import type { SavedIdentity } from '../agent/identity-store.js';
import { createLogger } from '../agent/log.js';
import { generateAgentKeyPair } from '../agent/proof.js';
import { runAgent } from '../agent/run.js';
import { EXIT } from '../agent/session.js';
import { readStatusSummary, statusLines } from '../agent/status-command.js';
import { CLOSE_ANSWER_MS, createTransport } from '../agent/transport.js';
import { hostFacts } from './helpers/agent-sim.js';
import { agentConfig, eventually, spawnAgent } from './helpers/agents.js';
import {
  apiError,
  FAKE_CONNECTOR,
  FAKE_GROUP,
  fakeIdentityMaker,
  type HostileScript,
  hostileServer,
  readyEvent,
} from './helpers/hostile-server.js';
import { tempDir } from './helpers/server.js';

// The agent against a server that lies (a broken or hostile one, or anyone who can write on a plain
// http:// link): what it sends must not end the agent, fill its memory or its disk, or cost it its
// identity. Each server here is a loopback listener of the test's (helpers/hostile-server.ts).

/** A state dir holding an identity enrolled with `server` (as a real enrollment leaves it). */
async function enrolledStateDir(server: string, lifetimeS?: number) {
  const stateDir = await tempDir('ce-hostile-');
  const maker = await fakeIdentityMaker();
  const identity = await maker.savedIdentity(server, lifetimeS);
  await writeFile(join(stateDir, 'identity.json'), JSON.stringify(identity, null, 2), { mode: 0o600 });
  return { stateDir, identity, maker };
}

/** The identity the agent holds on disk now. */
async function savedToken(stateDir: string): Promise<string | null> {
  const text = await readFile(join(stateDir, 'identity.json'), 'utf8').catch(() => null);
  return text ? (JSON.parse(text) as { identityToken: string }).identityToken : null;
}

/**
 * Runs the agent in process, enrolled with `server`, until `done` holds (polled) or 20 s pass, then
 * stops it: its exit code, its log lines, and whether `done` held.
 */
async function runEnrolledAgent(
  server: string,
  stateDir: string,
  done: (lines: string[]) => boolean,
): Promise<{ code: number; lines: string[]; held: boolean }> {
  const lines: string[] = [];
  const controller = new AbortController();
  const config = agentConfig({ servers: [server], stateDir });
  let held = false;
  const running = runAgent(
    config,
    createLogger('text', (line) => lines.push(line)),
    controller.signal,
  );
  const deadline = Date.now() + 20_000;
  const poll = setInterval(() => {
    if (done(lines) || Date.now() > deadline) {
      held = done(lines);
      controller.abort();
    }
  }, 50);
  try {
    const code = await running;
    return { code, lines, held };
  } finally {
    clearInterval(poll);
  }
}

describe('a server that sends what no server sends over the session', () => {
  it('a message that is not a JSON object (text, null, a binary frame) is dropped and the socket hung up, reconnecting: it ended the agent with a stack trace at every reconnect', async () => {
    const junk = ['not json', Buffer.from([1, 2, 3]), 'null'];
    await using server = await hostileServer({
      onSubscribed: (session, connection) => {
        session.event(readyEvent());
        const frame = junk[connection - 1];
        if (frame !== undefined) session.send(frame);
      },
    });
    const { stateDir, identity } = await enrolledStateDir(server.url);
    const agent = spawnAgent(['--server', server.url], stateDir);
    try {
      // A fourth connection: the agent lived through the three messages, each on its own socket.
      // Bounded: process start, then three backoffs that grow with each violation (0–1, 0–2, 0–4 s).
      await eventually(
        'the agent reconnected after each message',
        async () => server.connections() >= 4 || agent.exit(),
        60_000,
      ).catch((error: Error) => {
        throw new Error(
          `${error.message} (${server.connections()} connections; sent ${JSON.stringify(server.sessions.map((s) => s.received.map((m) => `${m.method}:${m.params?.path ?? ''}`)))})\n${agent.output()}`,
        );
      });
      expect(agent.exit(), agent.output()).toBeNull();
      const exit = await agent.stop('SIGTERM');
      expect(exit.code, agent.output()).toBe(EXIT.STOPPED);
      const output = agent.output();
      expect(output).not.toMatch(/^\s+at /m);
      expect(output).toContain('the server sent what no enrollment server sends; hung up, reconnecting');
      expect(output).toContain('sent a message that is not JSON');
      // Nothing it sent was taken for an event: the identity is the one it had.
      expect(await savedToken(stateDir)).toBe(identity.identityToken);
    } finally {
      await agent.stop('SIGKILL');
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a request made while the hang-up is unanswered (the host report after `ready`) waits for the close: tRPC sent it on a new socket opened at once, skipping the backoff and the line saying why', async () => {
    let junkAt = 0;
    const subscribedAt: number[] = [];
    await using server = await hostileServer({
      onSubscribed: (session, connection) => {
        subscribedAt.push(Date.now());
        session.event(readyEvent());
        if (connection !== 1) return;
        session.send('not json');
        junkAt = Date.now();
        // The agent's close frame is never read, so never answered: its socket stays closing until
        // the agent cuts it (CLOSE_ANSWER_MS), while the agent sends its host facts.
        session.socket.pause();
      },
    });
    const { stateDir } = await enrolledStateDir(server.url);
    try {
      const { code, lines, held } = await runEnrolledAgent(
        server.url,
        stateDir,
        () => subscribedAt.length >= 2,
      );
      expect(held, lines.join('\n')).toBe(true);
      expect(code).toBe(EXIT.STOPPED);
      // The next socket only once the first one is closed (cut, unanswered), then the backoff.
      const opened = server.sessions[1]!.openedAt - junkAt;
      expect(opened, lines.join('\n')).toBeGreaterThanOrEqual(CLOSE_ANSWER_MS - 100);
      expect(lines.join('\n')).toContain(
        'the server sent what no enrollment server sends; hung up, reconnecting',
      );
      // The report went over the next session, not over a socket of its own.
      expect(server.sessions[1]!.received.some((m) => m.params?.path === 'agent.report')).toBe(true);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a message over 64 KiB is not read (ws read up to 100 MiB): the agent closes the socket 1009 and reconnects', async () => {
    const closes: number[] = [];
    await using server = await hostileServer({
      onSubscribed: (session, connection) => {
        session.socket.on('close', (code) => closes.push(code));
        session.event(readyEvent());
        if (connection === 1)
          session.event({ type: 'status', status: 'x'.repeat(2 * 1024 * 1024), scope: 'group' });
      },
    });
    const { stateDir, identity } = await enrolledStateDir(server.url);
    try {
      const { code, lines, held } = await runEnrolledAgent(
        server.url,
        stateDir,
        () => server.connections() >= 2,
      );
      expect(held, lines.join('\n')).toBe(true);
      expect(code).toBe(EXIT.STOPPED);
      expect(closes[0]).toBe(1009);
      expect(lines.join('\n')).toContain('sent a message over 64 KiB');
      expect(lines.join('\n')).not.toContain('xxxxxxxx');
      expect(await savedToken(stateDir)).toBe(identity.identityToken);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a flood of events (1,000 status changes at once) is cut after 100: the agent hangs up (1008) instead of writing status.json and a log line for each', async () => {
    const closes: number[] = [];
    const script: HostileScript = {
      onSubscribed: (session, connection) => {
        session.socket.on('close', (code) => closes.push(code));
        session.event(readyEvent());
        if (connection !== 1) return;
        for (let i = 0; i < 1000; i++)
          session.event({ type: 'status', status: i % 2 ? 'enabled' : 'disabled', scope: 'connector' });
      },
    };
    await using server = await hostileServer(script);
    const { stateDir } = await enrolledStateDir(server.url);
    try {
      const { lines, held } = await runEnrolledAgent(server.url, stateDir, () => server.connections() >= 2);
      expect(held, lines.slice(-5).join('\n')).toBe(true);
      expect(closes[0]).toBe(1008);
      const told = lines.filter((line) => line.includes('by an admin')).length;
      expect(told).toBeGreaterThan(0);
      expect(told).toBeLessThanOrEqual(100);
      expect(lines.join('\n')).toContain('more messages than a server sends');
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});

describe('a server whose retry hint is out of bounds', () => {
  const host = hostFacts('h');

  it.each([
    ['huge (1e10 s: setTimeout overflowed to 1 ms)', 1e10],
    ['negative', -5],
    ['zero', 0],
    ['not a number', 'soon'],
  ])(
    'RATE_LIMITED with a %s retryAfterSeconds at enrollment: a wait, not a request loop as fast as it answers (each request carries the key)',
    async (_label, retryAfterSeconds) => {
      await using server = await hostileServer({
        onHttp: (_req, res) => {
          res
            .writeHead(429, { 'content-type': 'application/json' })
            .end(JSON.stringify({ error: apiError('RATE_LIMITED', { retryAfterSeconds, httpStatus: 429 }) }));
        },
      });
      const lines: string[] = [];
      const signal = AbortSignal.timeout(1500);
      const result = await enroll(
        {
          servers: [server.url],
          provisioningKey: 'cpk_abcdefabcdef_0123456789012345678901234567890123456789012',
          keyFileProblem: null,
          keyExposure: null,
          stateDir: '/nonexistent',
          name: null,
          caPem: null,
          allowInsecure: false,
          allowServerChange: false,
          logFormat: 'text',
        },
        createTransport(null),
        createLogger('text', (line) => lines.push(line)),
        signal,
        host,
        await generateAgentKeyPair(),
      );
      expect(result).toBeNull();
      // Backoff from 0–1 s, or the hint's second at least: a handful in 1.5 s (it was hundreds).
      expect(server.httpRequests(), lines.join('\n')).toBeLessThanOrEqual(4);
      expect(lines.join('\n')).not.toMatch(/retryInSeconds=(-|\d{5,})/);
    },
  );
});

/** `identity` with its `iat` moved `seconds` back, the rest (its signature too) as it was. */
function issuedEarlier(identity: { identityToken: string; identityExpiresAt: string }, seconds: number) {
  const [header, payload, signature] = identity.identityToken.split('.');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8'));
  claims.iat -= seconds;
  const edited = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return { ...identity, identityToken: `${header}.${edited}.${signature}` };
}

/** The identity file the agent holds now. */
async function savedIdentityFile(stateDir: string): Promise<SavedIdentity> {
  return JSON.parse(await readFile(join(stateDir, 'identity.json'), 'utf8')) as SavedIdentity;
}

describe('identities a server sends are saved only when they are this connector’s', () => {
  it('pushed: garbage, another connector’s, another key pair’s, another issuer’s, an expiry not the token’s, an oversized token, one issued before the held one are each refused in one line, the identity kept; a genuine renewal after them is saved', async () => {
    const maker = await fakeIdentityMaker();
    const good = await maker.token(2 * 86_400);
    const bad = [
      { identityToken: 'garbage', identityExpiresAt: good.identityExpiresAt },
      await maker.token(2 * 86_400, { sub: 'con_someoneelse1' }),
      await maker.token(2 * 86_400, { group_id: 'grp_someoneelse1' }),
      await maker.token(2 * 86_400, { jkt: 'thumbprint-of-a-key-the-server-holds' }),
      await maker.token(2 * 86_400, { iss: 'http://another-deployment.test' }),
      { ...(await maker.token(2 * 86_400)), identityExpiresAt: '2099-01-01T00:00:00.000Z' },
      await maker.token(2 * 86_400, { kid: 'k'.repeat(9000) }),
      // Issued before the one held (an old identity sent again). Its signature is not checked, so
      // the payload is edited in place. A shorter-lived one issued later is taken: a server whose
      // --identity-ttl was shortened renews with those.
      issuedEarlier(await maker.token(2 * 86_400), 3600),
    ];
    await using server = await hostileServer({
      onSubscribed: (session) => {
        session.event(readyEvent());
        for (const identity of bad) session.event({ type: 'identity', ...identity });
        session.event({ type: 'identity', ...good });
      },
    });
    const stateDir = await tempDir('ce-hostile-');
    const original = await maker.savedIdentity(server.url);
    await writeFile(join(stateDir, 'identity.json'), JSON.stringify(original), { mode: 0o600 });
    try {
      const { lines, held } = await runEnrolledAgent(server.url, stateDir, (seen) =>
        seen.some((line) => line.includes('identity renewed')),
      );
      expect(held, lines.join('\n')).toBe(true);
      const refused = lines.filter((line) => line.includes('the current identity is kept'));
      expect(refused, lines.join('\n')).toHaveLength(bad.length);
      for (const what of [
        'not a JWT',
        'another connector (con_someoneelse1',
        'another group',
        'another key pair',
        'issued by http://another-deployment.test',
        'expiry is not the one its token holds',
        'at most 8192',
        'issued before the one it would replace',
      ])
        expect(refused.join('\n')).toContain(what);
      const saved = await savedIdentityFile(stateDir);
      expect(saved.identityToken).toBe(good.identityToken);
      expect(saved.identityExpiresAt).toBe(good.identityExpiresAt);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('answered to agent.renew with more than an identity (a server list, a private key, a connector id): only the token and its expiry are taken; the rest was saved over identity.json, pointing the agent at another server for good', async () => {
    const maker = await fakeIdentityMaker();
    const renewed = await maker.token(2 * 86_400);
    const other = await generateAgentKeyPair();
    await using server = await hostileServer({
      onMutation: (path) =>
        path === 'agent.renew'
          ? {
              data: {
                ...renewed,
                server: 'http://127.0.0.1:9',
                servers: ['http://127.0.0.1:9'],
                privateJwk: other.privateJwk,
                connectorId: 'con_someoneelse1',
              },
            }
          : undefined,
    });
    const stateDir = await tempDir('ce-hostile-');
    // Short-lived, so that the agent asks for its renewal within seconds.
    const original = await maker.savedIdentity(server.url, 4);
    await writeFile(join(stateDir, 'identity.json'), JSON.stringify(original), { mode: 0o600 });
    try {
      const { lines, held } = await runEnrolledAgent(server.url, stateDir, (seen) =>
        seen.some((line) => line.includes('identity renewed')),
      );
      expect(held, lines.join('\n')).toBe(true);
      const saved = await savedIdentityFile(stateDir);
      expect(saved.identityToken).toBe(renewed.identityToken);
      expect(saved).toEqual({ ...original, ...renewed });
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('answered to enrollment with an identity bound to another key pair: nothing is saved, the agent says why and retries', async () => {
    const maker = await fakeIdentityMaker();
    const notOurs = await maker.token(86_400, { jkt: 'thumbprint-of-a-key-the-server-holds' });
    await using server = await hostileServer({
      onHttp: (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            result: { data: { connectorId: FAKE_CONNECTOR, groupId: FAKE_GROUP, ...notOurs } },
          }),
        );
      },
    });
    const stateDir = await tempDir('ce-hostile-');
    const lines: string[] = [];
    const controller = new AbortController();
    const poll = setInterval(() => {
      if (server.httpRequests() >= 2) controller.abort();
    }, 20);
    const timer = setTimeout(() => controller.abort(), 20_000);
    try {
      const code = await runAgent(
        agentConfig({
          servers: [server.url],
          provisioningKey: 'cpk_abcdefabcdef_0123456789012345678901234567890123456789012',
          stateDir,
        }),
        createLogger('text', (line) => lines.push(line)),
        controller.signal,
      );
      expect(code).toBe(EXIT.STOPPED);
      expect(server.httpRequests(), lines.join('\n')).toBeGreaterThanOrEqual(2);
      expect(await readFile(join(stateDir, 'identity.json'), 'utf8').catch(() => null)).toBeNull();
      expect(lines.join('\n')).toContain('answered with no identity this host can keep');
      expect(lines.join('\n')).toContain("bound to another key pair than this agent's");
    } finally {
      clearInterval(poll);
      clearTimeout(timer);
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});

describe('what a server says reaches the log and `status` as one line of text', () => {
  it('a revoke reason holding a forged log line and a terminal escape, and a status that is neither enabled nor disabled: no line is forged, no escape reaches a terminal, the bogus status is ignored', async () => {
    const forged = 'bye\n2026-01-01T00:00:00.000Z info  identity saved again\u001b[2J\u009b31m';
    await using server = await hostileServer({
      onSubscribed: (session) => {
        session.event(readyEvent());
        session.event({
          type: 'status',
          status: 'enabled\n2026-01-01T00:00:00.000Z info  forged',
          scope: 'group',
        });
        session.event({ type: 'revoked', reason: forged });
      },
    });
    const { stateDir } = await enrolledStateDir(server.url);
    try {
      const { code, lines } = await runEnrolledAgent(server.url, stateDir, () => false);
      expect(code, lines.join('\n')).toBe(EXIT.REVOKED);
      for (const line of lines) expect(line).not.toMatch(/[\n\r\u001b\u009b]/);
      expect(lines.join('\n')).toContain('the server sent a session event the agent does not know; ignored');
      expect(lines.join('\n')).not.toContain('by an admin  (scope=group)');
      const printed = statusLines(await readStatusSummary(stateDir));
      for (const line of printed) expect(line).not.toMatch(/[\n\r\u001b\u009b]/);
      expect(printed.join('\n')).toContain('bye\\u{A}2026');
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
