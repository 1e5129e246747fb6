import { rm } from 'node:fs/promises';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { parseServeConfig } from '../server/config.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import { connectSim, enrollSim, hostFacts } from './helpers/agent-sim.js';
import { readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { freePort } from './helpers/processes.js';
import { startRelay } from './helpers/relay.js';
import { rawCall, startTestServer, type TestServer, tempDir } from './helpers/server.js';

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

  it('the server log says which server a refused proof was made for: the reason alone did not tell an operator', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const port = await freePort();
    await using srv = await startTestServer({
      config: { port, publicUrl: `http://127.0.0.1:${port}` },
      logger,
    });
    const { enrolled } = await enrolledSim(srv);
    const session = connectSim(srv.url, enrolled, { htu: 'http://elsewhere.example.com' });
    expect(await session.waitForClose()).toEqual({ code: CLOSE_CODES.REFUSED, reason: 'PROOF_INVALID' });
    await session.close();
    expect(lines.find((l) => l.msg === 'session refused')).toMatchObject({
      reason: 'PROOF_INVALID',
      detail: `The proof was made for http://elsewhere.example.com, not for this server's ${srv.url} (its --public-url).`,
    });
  });

  it('a proof naming the server with a ws:// scheme or a path is the same origin', async () => {
    await using srv = await serverWithPublicUrl();
    const { enrolled } = await enrolledSim(srv);
    const session = connectSim(srv.url, enrolled, { htu: `${srv.url.replace(/^http/, 'ws')}/trpc` });
    await session.waitFor('ready');
    await session.close();
  });
});

describe('an enrollment through another URL than --public-url is refused before the key is used', () => {
  it('a single-use key given to an agent with the wrong --server is not spent: exit 3 naming the URL to use, nothing recorded; the right URL then enrolls with it', async () => {
    await using srv = await serverWithPublicUrl();
    const group = await srv.admin.groups.create.mutate({ name: 'Once', maxUses: 1 });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const relay = await startRelay(srv.url);
    const stateDir = await tempDir('ce-wrong-url-agent-');
    try {
      const wrong = spawnAgent(['--server', relay.url, '--key', key, '--name', 'misdialled'], stateDir);
      expect((await wrong.exited).code).toBe(3);
      expect(wrong.output()).toContain(
        `PROOF_INVALID: This server is reached at ${srv.url} (its --public-url), not at ${relay.url}: every session through that URL would be refused. Enroll with --server ${srv.url}; the key was not used.`,
      );
      expect(await srv.admin.connectors.list.query({ groupId: group.id })).toMatchObject({ items: [] });
      const refusals = await srv.admin.audit.list.query({ type: 'enrollment.refused' });
      expect(refusals).toHaveLength(1);
      expect(refusals[0]).toMatchObject({ reason: 'PROOF_INVALID', groupId: group.id, security: false });

      const right = spawnAgent(['--server', srv.url, '--key', key, '--name', 'misdialled'], stateDir);
      try {
        await waitConnected(srv.admin, 'misdialled');
      } finally {
        right.kill('SIGTERM');
        await right.exited;
      }
    } finally {
      await relay.close();
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('with several servers, one that refuses the URL is passed over; only every one refusing stops the agent', async () => {
    await using srv = await serverWithPublicUrl();
    const group = await srv.admin.groups.create.mutate({ name: 'Listed', maxUses: 1 });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const relays = [await startRelay(srv.url), await startRelay(srv.url)];
    const dirs = [await tempDir('ce-wrong-urls-'), await tempDir('ce-one-right-url-')];
    try {
      const nowhere = spawnAgent(
        ['--server', `${relays[0]!.url},${relays[1]!.url}`, '--key', key, '--name', 'nowhere'],
        dirs[0]!,
      );
      expect((await nowhere.exited).code).toBe(3);
      expect(nowhere.output()).toContain('refused the enrollment (PROOF_INVALID): This server is reached at');
      expect(nowhere.output()).toContain('the key was not used: asking the next server of the list');
      expect(nowhere.output()).toContain(`Enroll with --server ${srv.url}; the key was not used.`);
      // The single use is still there for an agent whose list holds the right URL.
      const somewhere = spawnAgent(
        ['--server', `${relays[0]!.url},${srv.url}`, '--key', key, '--name', 'somewhere'],
        dirs[1]!,
      );
      try {
        await waitConnected(srv.admin, 'somewhere');
      } finally {
        somewhere.kill('SIGTERM');
        await somewhere.exited;
      }
    } finally {
      for (const relay of relays) await relay.close();
      for (const dir of dirs) await rm(dir, { recursive: true, force: true });
    }
  });

  it('the URL is checked by origin (a path or a default port are the same server); an agent that sends none (older) is not checked', async () => {
    await using srv = await serverWithPublicUrl();
    const group = await srv.admin.groups.create.mutate({ name: 'Origins' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrollThrough = async (serverUrl: string | undefined, name: string) => {
      const keyPair = await generateAgentKeyPair();
      return rawCall(srv.url, 'agent.enroll', {
        provisioningKey: key,
        publicKey: keyPair.publicJwk,
        host: hostFacts(name),
        agentVersion: 'test',
        name,
        ...(serverUrl === undefined ? {} : { serverUrl }),
      });
    };
    expect(await enrollThrough(`${srv.url}/`, 'slash')).toMatchObject({ status: 200 });
    expect(await enrollThrough(undefined, 'older-agent')).toMatchObject({ status: 200 });
    const other = await enrollThrough(srv.url.replace('127.0.0.1', 'localhost'), 'by-name');
    expect(other).toMatchObject({ status: 401, reason: 'PROOF_INVALID' });
    const notAUrl = await enrollThrough('enroll.example.com', 'no-scheme');
    expect(notAUrl).toMatchObject({ status: 401, reason: 'PROOF_INVALID' });
    expect(JSON.stringify(notAUrl.error)).toContain('not at the URL the agent was given');
    const names = (await srv.admin.connectors.list.query({ groupId: group.id })).items.map((c) => c.name);
    expect(names.sort()).toEqual(['older-agent', 'slash']);
  });

  it('a server without --public-url checks no URL', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Unbound' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const keyPair = await generateAgentKeyPair();
    const answer = await rawCall(srv.url, 'agent.enroll', {
      provisioningKey: key,
      publicKey: keyPair.publicJwk,
      host: hostFacts('anywhere'),
      agentVersion: 'test',
      serverUrl: 'https://elsewhere.example.com',
    });
    expect(answer).toMatchObject({ status: 200 });
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
