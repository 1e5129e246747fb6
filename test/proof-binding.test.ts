import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseServeConfig } from '../server/config.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { freePort } from './helpers/processes.js';
import { startRelay } from './helpers/relay.js';
import { startTestServer, type TestServer, tempDir } from './helpers/server.js';

/** A server that knows its public URL (--public-url), listening where that URL says. */
async function serverWithPublicUrl(): Promise<TestServer> {
  const port = await freePort();
  return startTestServer({ config: { port, publicUrl: `http://127.0.0.1:${port}` } });
}

async function enrolledSim(srv: TestServer) {
  const group = await srv.admin.groups.create.mutate({ name: 'Bound' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  return { key, enrolled: (await enrollSim(srv.url, key)).enrolled! };
}

// The relay pipes every byte, the Host header included: what a stranger who got an agent pointed
// at them would run to pass its connectionParams on. The server's nonce reaches the agent through it.
describe('a proof names the server it is meant for (htu), checked against --public-url', () => {
  it('connectionParams an agent gave a relay are refused by the real server (PROOF_INVALID); the same agent straight to the server gets in', async () => {
    await using srv = await serverWithPublicUrl();
    const { enrolled } = await enrolledSim(srv);
    const relay = await startRelay(srv.url);
    try {
      // The agent signs the URL it dialled: the relay's.
      const relayed = connectSim(relay.url, enrolled);
      expect(await relayed.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'PROOF_INVALID' });
      await relayed.close();
      expect(srv.server.hub.size).toBe(0);
      // Through the same relay, a proof naming the real server is accepted: the refusal is the binding's.
      const named = connectSim(relay.url, enrolled, { htu: srv.url });
      await named.waitFor('ready');
      await named.close();
      const direct = connectSim(srv.url, enrolled);
      await direct.waitFor('ready');
      await direct.close();
    } finally {
      await relay.close();
    }
  });

  it('a proof naming the server with a ws:// scheme or a path is the same origin', async () => {
    await using srv = await serverWithPublicUrl();
    const { enrolled } = await enrolledSim(srv);
    const session = connectSim(srv.url, enrolled, { htu: `${srv.url.replace(/^http/, 'ws')}/trpc` });
    await session.waitFor('ready');
    await session.close();
  });
});

describe('the agent presents its identity only to the server that issued it', () => {
  it('refuses (exit 2) a --server other than the one it enrolled with, saying how to move; with --allow-server-change a URL the server refuses is not saved', async () => {
    await using srv = await serverWithPublicUrl();
    const { key } = await enrolledSim(srv);
    const stateDir = await tempDir('ce-moved-agent-');
    const relay = await startRelay(srv.url);
    try {
      const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'homebody'], stateDir);
      await waitConnected(srv.admin, 'homebody');
      first.kill('SIGTERM');
      expect((await first.exited).code).toBe(0);
      const before = await readIdentity(stateDir);

      const pointedAway = spawnAgent(['--server', relay.url], stateDir);
      expect((await pointedAway.exited).code).toBe(2);
      expect(pointedAway.output()).toContain(
        `this identity was issued by ${srv.url}, not by --server ${relay.url}`,
      );
      expect(pointedAway.output()).toContain('--allow-server-change');
      expect(await readIdentity(stateDir)).toEqual(before);

      // Told that the server moved, it goes, and the real server (which knows its public URL)
      // refuses the proof made for the relay: a configuration error (exit 2, which the unit does
      // not restart); the identity is kept, not wiped.
      const moved = spawnAgent(['--server', relay.url, '--allow-server-change'], stateDir);
      expect((await moved.exited).code).toBe(2);
      expect(moved.output()).toContain(
        `the server refused this agent's proof (PROOF_INVALID): ${relay.url} is not the URL the server was told it is reached by (its --public-url)`,
      );
      const after = await readIdentity(stateDir);
      expect(after?.identityToken).toBe(before?.identityToken);
      // Nor is the URL it was refused at: no session there was ever ready.
      expect((after as { server?: string } | null)?.server).toBe(srv.url);
      expect(moved.output()).not.toContain('the new server list is saved');
    } finally {
      await relay.close();
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a --public-url that binds proofs to no origin is refused at start (it used to turn the check off)', () => {
    // "localhost:7420" reads as a URL whose scheme is "localhost:": its origin is none, and the
    // server then checked no proof's URL at all; so did ftp://…
    for (const given of [
      'localhost:7420',
      'ftp://enroll.example.com',
      'https://user:pw@enroll.example.com',
      'https://',
    ]) {
      expect(() => parseServeConfig({ publicUrl: given }, {}), given).toThrow(
        '--public-url: must be an http:// or https:// URL with a host, as agents reach the server (e.g. https://enroll.example.com)',
      );
      expect(() => parseServeConfig({}, { CONNECTOR_PUBLIC_URL: given }), given).toThrow(
        /^CONNECTOR_PUBLIC_URL: must be/,
      );
    }
    expect(parseServeConfig({ publicUrl: 'https://enroll.example.com:8443/' }, {}).publicUrl).toBe(
      'https://enroll.example.com:8443/',
    );
  });
});
