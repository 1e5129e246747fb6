import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createProof } from '../agent/proof.js';
import { appRouter } from '../server/router.js';
import type { AgentSession } from '../server/sessions/hub.js';
import { createCallerFactory } from '../server/trpc.js';
import { CLOSE_CODES, SESSION_NONCE_HEADER } from '../shared/protocol.js';
import { connectSim, type Enrolled, enrollSim, hostFacts } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/**
 * A websocket that authenticates like an agent (identity + a proof of this connection's nonce) and
 * then never subscribes to `agent.session`: what a tRPC client leaves behind when it closes
 * mid-reconnect, or what someone holding a leaked identity file would open by hand.
 */
async function authenticatedSocket(
  srv: TestServer,
  enrolled: Enrolled,
  options: { localAddress?: string } = {},
) {
  const ws = new WebSocket(`${srv.url.replace(/^http/, 'ws')}/trpc?connectionParams=1`, options);
  // 'upgrade' and 'open' come in the same turn: listen for both before waiting on either.
  const upgraded = new Promise<string>((resolve, reject) => {
    ws.once('upgrade', (res) => resolve(String(res.headers[SESSION_NONCE_HEADER] ?? '')));
    ws.once('error', reject);
  });
  const opened = new Promise((resolve) => ws.once('open', resolve));
  const nonce = await upgraded;
  await opened;
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  const answers = new Map<number, unknown>();
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString()) as { id?: number };
    if (typeof message.id === 'number') answers.set(message.id, message);
  });
  const proof = await createProof(enrolled.keyPair.privateJwk, enrolled.identityToken, {
    nonce,
    htu: srv.url,
  });
  ws.send(JSON.stringify({ method: 'connectionParams', data: { identity: enrolled.identityToken, proof } }));
  let nextId = 1;
  return {
    ws,
    nonce,
    closed,
    /** Calls `agent.report` over this socket and resolves with the raw answer. */
    async report(
      hostname: string,
    ): Promise<{ result?: { data?: unknown }; error?: { data?: { reason?: string } } }> {
      const id = nextId++;
      ws.send(
        JSON.stringify({
          id,
          method: 'mutation',
          params: { path: 'agent.report', input: { host: hostFacts(hostname) } },
        }),
      );
      return eventually(`answer ${id}`, async () => answers.get(id) as never, 5000);
    },
  };
}

async function enrolledAgents(srv: TestServer, names: string[]) {
  const group = await srv.admin.groups.create.mutate({ name: 'Sockets' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  const enrolled: Enrolled[] = [];
  for (const name of names) enrolled.push((await enrollSim(srv.url, key, name)).enrolled!);
  return { group, enrolled };
}

/** Calls procedures in the context a socket's calls run with: a call in flight when it closed. */
const callerFor = (srv: TestServer, agent: AgentSession) =>
  createCallerFactory(appRouter)({
    services: srv.server.services,
    hub: srv.server.hub,
    remoteAddress: '127.0.0.1',
    bearerToken: null,
    agent,
    agentRefusal: null,
  });

const hostnameOf = async (srv: TestServer, connectorId: string) =>
  (await srv.admin.connectors.get.query({ connectorId })).host?.hostname;

describe('an authenticated socket that never subscribes is a session all the same', () => {
  it('is counted from the moment it authenticates (/healthz, connected), and revoke closes it with 4003 at once', async () => {
    await using srv = await startTestServer();
    const {
      enrolled: [agent],
    } = await enrolledAgents(srv, ['lurker']);
    const socket = await authenticatedSocket(srv, agent!);
    expect(socket.nonce).toMatch(/^[A-Za-z0-9_-]{22}$/);
    // A call proves the handshake was accepted; it writes while the connector is usable.
    expect((await socket.report('before-revoke')).result).toBeDefined();
    expect(await hostnameOf(srv, agent!.connectorId)).toBe('before-revoke');
    const health = (await (await fetch(`${srv.url}/healthz`)).json()) as { sessions: number };
    expect(health.sessions).toBe(1);
    expect((await srv.admin.connectors.get.query({ connectorId: agent!.connectorId })).connection).toBe(
      'connected',
    );

    await srv.admin.connectors.revoke.mutate({ connectorId: agent!.connectorId });
    expect(await socket.closed).toEqual({ code: CLOSE_CODES.REVOKED, reason: 'CONNECTOR_REVOKED' });
    expect(srv.server.hub.size).toBe(0);
    expect(await hostnameOf(srv, agent!.connectorId)).toBe('before-revoke');
  });

  it('delete and a forced group delete close it with 4004', async () => {
    await using srv = await startTestServer();
    const {
      group,
      enrolled: [one, two],
    } = await enrolledAgents(srv, ['deleted-one', 'group-member']);
    const first = await authenticatedSocket(srv, one!);
    const second = await authenticatedSocket(srv, two!);
    await eventually('both authenticated', async () => srv.server.hub.size === 2);
    await srv.admin.connectors.delete.mutate({ connectorId: one!.connectorId });
    expect(await first.closed).toEqual({ code: CLOSE_CODES.DELETED, reason: 'CONNECTOR_NOT_FOUND' });
    await srv.admin.groups.delete.mutate({ groupId: group.id, force: true });
    expect(await second.closed).toEqual({ code: CLOSE_CODES.DELETED, reason: 'CONNECTOR_NOT_FOUND' });
    expect(srv.server.hub.size).toBe(0);
  });

  it('a newer session replaces it (4009), and a call over the replaced socket writes nothing', async () => {
    await using srv = await startTestServer();
    const {
      enrolled: [agent],
    } = await enrolledAgents(srv, ['twice']);
    const lurker = await authenticatedSocket(srv, agent!);
    expect((await lurker.report('first')).result).toBeDefined();
    const callOverLurker = callerFor(srv, srv.server.hub.liveSession(agent!.connectorId)!);
    const genuine = connectSim(srv.url, agent!);
    await genuine.waitFor('ready');
    expect(await lurker.closed).toEqual({
      code: CLOSE_CODES.REPLACED,
      reason: 'SESSION_REPLACED by=127.0.0.1',
    });
    expect(srv.server.hub.size).toBe(1);
    await expect(callOverLurker.agent.report({ host: hostFacts('replaced') })).rejects.toMatchObject({
      cause: { reason: 'IDENTITY_INVALID' },
    });
    expect(await hostnameOf(srv, agent!.connectorId)).toBe('first');
    await genuine.close();
  });

  it('counts against --max-sessions-per-address', async () => {
    await using srv = await startTestServer({ config: { maxSessionsPerAddress: 1 } });
    const {
      enrolled: [a, b],
    } = await enrolledAgents(srv, ['holder', 'latecomer']);
    const holder = await authenticatedSocket(srv, a!);
    expect((await holder.report('holder')).result).toBeDefined();
    const latecomer = connectSim(srv.url, b!);
    expect(await latecomer.waitForClose()).toEqual({
      code: CLOSE_CODES.RATE_LIMITED,
      reason: 'RATE_LIMITED',
    });
    await latecomer.close();
    holder.ws.close();
  });

  it('is closed (4408, not final) when it does not subscribe within the bound', async () => {
    await using srv = await startTestServer({ config: { handshakeTimeoutMs: 300 } });
    const {
      enrolled: [agent],
    } = await enrolledAgents(srv, ['idle']);
    const socket = await authenticatedSocket(srv, agent!);
    expect((await socket.report('idle')).result).toBeDefined();
    expect((await socket.closed).code).toBe(CLOSE_CODES.HANDSHAKE_TIMEOUT);
    await eventually('detached', async () => srv.server.hub.size === 0);
    expect((await srv.admin.connectors.get.query({ connectorId: agent!.connectorId })).connection).toBe(
      'disconnected',
    );
  });

  it('not subscribed and deaf to the close frame: the connection is cut within seconds, not held the 30 s the ws library waits for an answer', async () => {
    await using srv = await startTestServer({ config: { handshakeTimeoutMs: 300 } });
    const {
      enrolled: [agent],
    } = await enrolledAgents(srv, ['deaf']);
    const socket = await authenticatedSocket(srv, agent!);
    await eventually('registered', async () => srv.server.hub.size === 1, 5000);
    // It reads nothing more: the 4408 is never answered.
    (socket.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const start = Date.now();
    await eventually('cut', async () => srv.server.hub.size === 0, 6000);
    expect(Date.now() - start).toBeLessThan(6000);
    socket.ws.terminate();
  });

  it('agent.* calls re-check the connector on every call: a call that arrives after a revoke (in flight when the socket closed) writes nothing', async () => {
    await using srv = await startTestServer();
    const {
      enrolled: [agent],
    } = await enrolledAgents(srv, ['checked']);
    const socket = await authenticatedSocket(srv, agent!);
    await srv.admin.connectors.disable.mutate({ connectorId: agent!.connectorId });
    expect((await socket.report('while-disabled')).result).toBeDefined();
    // The context the socket's calls run with, as the server holds it.
    const session = srv.server.hub.liveSession(agent!.connectorId)!;
    expect(session.connectorId).toBe(agent!.connectorId);
    const callOverThatSocket = callerFor(srv, session);
    await srv.admin.connectors.revoke.mutate({ connectorId: agent!.connectorId });
    await socket.closed;
    await expect(callOverThatSocket.agent.report({ host: hostFacts('after-revoke') })).rejects.toMatchObject({
      cause: { reason: 'CONNECTOR_REVOKED' },
    });
    expect(await hostnameOf(srv, agent!.connectorId)).toBe('while-disabled');
  });
});
