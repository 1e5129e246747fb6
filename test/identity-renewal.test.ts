import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { issuedAtOf } from '../agent/renewal.js';
import { ManualClock } from '../server/clock.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import type { SessionEvent } from '../shared/protocol.js';
import { connectSim, type Enrolled, enrollSim } from './helpers/agent-sim.js';
import { type AgentProc, eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { realTimeClock, startTestServer, type TestServer, tempDir } from './helpers/server.js';

async function setup(options: Parameters<typeof startTestServer>[0] = {}) {
  const srv = await startTestServer(options);
  const group = await srv.admin.groups.create.mutate({ name: 'Renewals' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { srv, key };
}

/** Waits (bounded) until the agent's identity file has held `count` distinct tokens since `seen` began. */
async function tokensSaved(stateDir: string, seen: Set<string>, count: number, timeoutMs: number) {
  return eventually(
    `${count} distinct identities saved`,
    async () => {
      const token = (await readIdentity(stateDir))?.identityToken;
      if (token) seen.add(token);
      return seen.size >= count ? [...seen] : null;
    },
    timeoutMs,
  );
}

function stillRunning(agent: AgentProc): void {
  expect(agent.child.exitCode, agent.output()).toBeNull();
  expect(agent.output()).not.toMatch(/wiping|IDENTITY_EXPIRED/);
}

async function renewalAudits(srv: TestServer, via: 'push' | 'request') {
  const entries = await srv.admin.audit.list.query({ type: 'identity.renewed', limit: 1000 });
  return entries.filter((e) => (e.details as { via?: string }).via === via);
}

describe('renewal follows the identity’s lifetime (real agent, real clock)', () => {
  it('renews a connected agent three times in a row with a 3 s lifetime, each when a third is left', async () => {
    const { srv, key } = await setup({ clock: realTimeClock(), config: { identityTtlMs: 3000 } });
    await using _ = srv;
    const stateDir = await tempDir('ce-renew3-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'thrice'], stateDir);
    await waitConnected(srv.admin, 'thrice');
    const tokens = await tokensSaved(stateDir, new Set(), 4, 15_000);
    stillRunning(agent);
    // Issued a lifetime's two thirds apart (whole seconds in the token), never more.
    const issued = tokens.map((t) => issuedAtOf(t)!);
    for (let i = 2; i < issued.length; i++) expect(issued[i]! - issued[i - 1]!).toBeLessThanOrEqual(3000);
    expect((await renewalAudits(srv, 'push')).length).toBeGreaterThanOrEqual(3);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('keeps renewing across a server restart on the same port', async () => {
    const first = await setup({ clock: realTimeClock(), config: { identityTtlMs: 6000 } });
    const stateDir = await tempDir('ce-renew-restart-');
    const agent = spawnAgent(
      ['--server', first.srv.url, '--key', first.key, '--name', 'restarted'],
      stateDir,
    );
    await waitConnected(first.srv.admin, 'restarted');
    await first.srv.stop();
    const seen = new Set([(await readIdentity(stateDir))!.identityToken]);
    await using srv = await startTestServer({
      clock: realTimeClock(),
      dataDir: first.srv.dataDir,
      config: { identityTtlMs: 6000, port: first.srv.server.port },
    });
    await waitConnected(srv.admin, 'restarted');
    // Two lifetimes' worth of renewals on the new server, the agent connected throughout.
    await tokensSaved(stateDir, seen, 3, 20_000).catch((error: Error) => {
      throw new Error(`${error.message}; the agent said:\n${agent.output()}`);
    });
    stillRunning(agent);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('a server down past the renewal time and back before expiry still renews the agent, which stays', async () => {
    const first = await setup({ clock: realTimeClock(), config: { identityTtlMs: 6000 } });
    const stateDir = await tempDir('ce-renew-down-');
    const agent = spawnAgent(['--server', first.srv.url, '--key', first.key, '--name', 'patient'], stateDir);
    await waitConnected(first.srv.admin, 'patient');
    await first.srv.stop();
    const saved = (await readIdentity(stateDir))!;
    const renewAt = issuedAtOf(saved.identityToken)! + 4000;
    // Down until after the renewal was due (4 s into the 6 s lifetime), back 1.5 s before expiry.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, renewAt + 500 - Date.now())));
    await using srv = await startTestServer({
      clock: realTimeClock(),
      dataDir: first.srv.dataDir,
      config: { identityTtlMs: 6000, port: first.srv.server.port },
    });
    const seen = new Set([saved.identityToken]);
    // The renewal on reconnecting, then one more while connected.
    await tokensSaved(stateDir, seen, 3, 15_000);
    stillRunning(agent);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await srv.stop();
    await rm(stateDir, { recursive: true, force: true });
  });

  it('an identity lifetime shortened on the server (--identity-ttl): the agent takes the shorter identity a key rotation pushes (it refused it, and was cut off once the old key was retired)', async () => {
    // Enrolled for the default 365 days; the server then restarts with 30.
    const first = await setup({ clock: realTimeClock() });
    const stateDir = await tempDir('ce-renew-shorter-');
    const agent = spawnAgent(
      ['--server', first.srv.url, '--key', first.key, '--name', 'shortened'],
      stateDir,
    );
    await waitConnected(first.srv.admin, 'shortened');
    await first.srv.stop();
    await using srv = await startTestServer({
      clock: realTimeClock(),
      dataDir: first.srv.dataDir,
      config: { identityTtlMs: 30 * 86_400_000, rotationSpreadMs: 500, port: first.srv.server.port },
    });
    await waitConnected(srv.admin, 'shortened');
    const rotated = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    const kidOf = (token: string) =>
      JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()).kid;
    await eventually(
      'the identity of the new key saved',
      async () => kidOf((await readIdentity(stateDir))!.identityToken) === rotated.key.kid,
      10_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}; the agent said:\n${agent.output()}`);
    });
    stillRunning(agent);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await rm(stateDir, { recursive: true, force: true });
  });

  it('asks for its renewal itself (agent.renew) when the server never pushes one', async () => {
    const { srv, key } = await setup({ clock: realTimeClock(), config: { identityTtlMs: 3000 } });
    await using _ = srv;
    // A server that lost its pushes: the schedule never renews anyone.
    srv.server.hub.renewDueIdentities = async () => 0;
    const stateDir = await tempDir('ce-renew-own-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'self-reliant'], stateDir);
    await waitConnected(srv.admin, 'self-reliant');
    await tokensSaved(stateDir, new Set(), 4, 15_000);
    stillRunning(agent);
    expect((await renewalAudits(srv, 'request')).length).toBeGreaterThanOrEqual(2);
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    await rm(stateDir, { recursive: true, force: true });
  });
});

describe('agent.renew', () => {
  it('answers a new identity for the same connector and key once half the lifetime has passed, RATE_LIMITED before', async () => {
    const { srv, key } = await setup({ config: { identityTtlMs: 60_000 } });
    await using _ = srv;
    // Only the agent's request renews here: the hub's own schedule is switched off.
    srv.server.hub.renewDueIdentities = async () => 0;
    const enrolled = (await enrollSim(srv.url, key)).enrolled!;
    const sim = connectSim(srv.url, enrolled);
    await sim.waitFor('ready');
    await expect(sim.client.agent.renew.mutate()).rejects.toMatchObject({
      data: { reason: 'RATE_LIMITED', retryAfterSeconds: 30 },
    });
    srv.clock.advance(30_000);
    const renewed = await sim.client.agent.renew.mutate();
    expect(Date.parse(renewed.identityExpiresAt)).toBe(
      Math.floor((Math.floor(srv.clock.now() / 1000) * 1000 + 60_000) / 1000) * 1000,
    );
    expect(renewed.identityToken).not.toBe(enrolled.identityToken);
    // A second request on the fresh identity is not due.
    await expect(sim.client.agent.renew.mutate()).rejects.toMatchObject({ data: { reason: 'RATE_LIMITED' } });
    const view = await srv.admin.connectors.get.query({ connectorId: enrolled.connectorId });
    expect(view.identity.expiresAt).toBe(renewed.identityExpiresAt);
    expect(await renewalAudits(srv, 'request')).toHaveLength(1);
    await sim.close();
    // The answer opens sessions with the same key pair.
    const again = connectSim(srv.url, { ...enrolled, identityToken: renewed.identityToken });
    expect(await again.waitFor('ready')).toMatchObject({ connectorId: enrolled.connectorId });
    await again.close();
  });

  it('requests sent at once past half the lifetime share one renewal: one signature, one audit event (the check let every one through)', async () => {
    const { srv, key } = await setup({ config: { identityTtlMs: 60_000 } });
    await using _ = srv;
    srv.server.hub.renewDueIdentities = async () => 0;
    const enrolled = (await enrollSim(srv.url, key)).enrolled!;
    const sim = connectSim(srv.url, enrolled);
    await sim.waitFor('ready');
    srv.clock.advance(30_000);
    // One batch of ten (the socket's most): they arrive in one turn, before any is signed.
    const answers = await Promise.allSettled(
      Array.from({ length: 10 }, () => sim.client.agent.renew.mutate()),
    );
    const tokens = new Set(answers.flatMap((a) => (a.status === 'fulfilled' ? [a.value.identityToken] : [])));
    // Those that came while it was under way got it; any after it was recorded are RATE_LIMITED.
    expect(tokens.size).toBe(1);
    for (const a of answers)
      if (a.status === 'rejected') expect(a.reason).toMatchObject({ data: { reason: 'RATE_LIMITED' } });
    expect(await renewalAudits(srv, 'request')).toHaveLength(1);
    await sim.close();
  });
});

describe('a connector reconnecting with a token older than its newest identity', () => {
  it('is not renewed again within a minute (a sixth of a short lifetime) of the newest, pushed or asked for: a loop reconnecting with an old token signed and wrote one per connect', async () => {
    // 4 minutes: the clock moves less than the 5 minutes a proof may be off the server's time.
    const { srv, key } = await setup({ config: { identityTtlMs: 240_000 } });
    await using _ = srv;
    const enrolled = (await enrollSim(srv.url, key)).enrolled!;
    // Past two thirds of the lifetime: the first connect is renewed at once, and told.
    srv.clock.advance(161_000);
    const first = connectSim(srv.url, enrolled);
    await first.waitFor('identity');
    await first.close();
    expect(await renewalAudits(srv, 'push')).toHaveLength(1);
    // The same old token again (its host missed the push, or a loop): not renewed this time.
    const again = connectSim(srv.url, enrolled);
    await again.waitFor('ready');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(again.events.map((e) => e.type)).not.toContain('identity');
    // Nor when it asks (agent.renew): told when to ask again, as before half its lifetime.
    const refused = await again.client.agent.renew.mutate().catch((error: unknown) => error);
    expect(refused).toMatchObject({ data: { reason: 'RATE_LIMITED', retryAfterSeconds: 39 } });
    await again.close();
    expect(await renewalAudits(srv, 'push')).toHaveLength(1);
    expect(await renewalAudits(srv, 'request')).toHaveLength(0);
    // A sixth of the lifetime (40 s) after the newest it is renewed on connect again, before this
    // token's last sixth.
    srv.clock.advance(41_000);
    const later = connectSim(srv.url, enrolled);
    await later.waitFor('identity');
    await later.close();
    expect(await renewalAudits(srv, 'push')).toHaveLength(2);
  });
});

describe('renewal of many sessions (hub schedule, manual clock)', () => {
  it('renews 1,000 sessions with a 30 s lifetime on time, each once per two thirds of a lifetime', async () => {
    const clock = new ManualClock(Date.now());
    const { srv, key } = await setup({
      clock,
      config: {
        identityTtlMs: 30_000,
        rateLimits: { ...DEFAULT_RATE_LIMITS, enrollPerAddressPerMinute: 5000 },
      },
    });
    await using _ = srv;
    const enrolled: Enrolled[] = [];
    for (let i = 0; i < 1000; i += 100)
      enrolled.push(
        ...(await Promise.all(
          Array.from(
            { length: 100 },
            async (_, j) => (await enrollSim(srv.url, key, `fleet-${i + j}`)).enrolled!,
          ),
        )),
      );
    const sims: ReturnType<typeof connectSim>[] = [];
    for (let i = 0; i < enrolled.length; i += 100) {
      const batch = enrolled.slice(i, i + 100).map((e) => connectSim(srv.url, e));
      await Promise.all(batch.map((s) => s.waitFor('ready', 20_000)));
      sims.push(...batch);
    }
    expect(srv.server.hub.size).toBe(1000);
    const issuedAt = Math.min(...enrolled.map((e) => issuedAtOf(e.identityToken)!));
    const identityEvents = (events: SessionEvent[]) =>
      events.filter((e): e is Extract<SessionEvent, { type: 'identity' }> => e.type === 'identity');
    const pushed = () => sims.reduce((sum, s) => sum + identityEvents(s.events).length, 0);
    // 70 s in 1 s steps, the hub's own timer doing the renewing: due at 20, 40 and 60 s.
    for (let step = 1; step <= 70; step++) {
      clock.advance(1000);
      const expected = 1000 * Math.floor(step / 20);
      // Bounded generously: 1,000 signatures and pushes to 1,000 clients in this process take ~1 s
      // alone, several on two cores shared with other test files.
      if (step % 20 === 0)
        await eventually(
          `${expected} renewals pushed (${pushed()} when the wait began)`,
          async () => pushed() === expected,
          30_000,
        );
    }
    expect(pushed()).toBe(3000);
    for (const [i, sim] of sims.entries()) {
      const issued = [
        issuedAtOf(enrolled[i]!.identityToken)!,
        ...identityEvents(sim.events).map((e) => issuedAtOf(e.identityToken)!),
      ];
      // Each renewal once a third of the lifetime was left (20 s), at most a step (1 s) late.
      for (let k = 1; k < issued.length; k++) {
        expect(issued[k]! - issued[k - 1]!).toBeGreaterThanOrEqual(20_000);
        expect(issued[k]! - issued[k - 1]!).toBeLessThanOrEqual(22_000);
      }
      expect(issued[1]! - issuedAt).toBeLessThanOrEqual(22_000);
    }
    await Promise.all(sims.map((s) => s.close()));
  }, 150_000);
});
