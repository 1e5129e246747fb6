import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, generateKeyPair, SignJWT } from 'jose';
import { type WebSocket, WebSocketServer } from 'ws';
import { generateAgentKeyPair } from '../../agent/proof.js';
import { IDENTITY_AUDIENCE, SERVER_TIME_HEADER, SESSION_NONCE_HEADER } from '../../shared/protocol.js';

/**
 * A server that lies: a loopback HTTP and websocket listener speaking just enough of tRPC's wire
 * protocol (connectionParams, the `agent.session` subscription, mutations) for a real agent to hold
 * a session with it, and then sending whatever the test scripts. Nothing here checks the agent.
 */

/** What the test may do with one agent session (one websocket). */
export interface HostileSession {
  /** Sends raw text (or a Buffer, as a binary message) on the socket. */
  send(frame: string | Buffer): void;
  /** Sends a subscription event (`{type: 'ready', …}`) as tRPC would. */
  event(data: unknown): void;
  /** The messages the agent sent on this socket, parsed. */
  received: { method?: string; id?: number; params?: { path?: string } }[];
  socket: WebSocket;
  /** When the socket was upgraded (Date.now()). */
  openedAt: number;
}

export interface HostileScript {
  /** Called once the agent has subscribed to `agent.session` (after a `started`); default: a `ready`. */
  onSubscribed?(session: HostileSession, connection: number): void;
  /** Answers a mutation (`agent.renew`, `agent.report`, …): the `result.data` or an `error` object. */
  onMutation?(path: string, session: HostileSession): { data: unknown } | { error: unknown } | undefined;
  /** Answers an HTTP request (enrollment). Default: 404 JSON. */
  onHttp?(req: IncomingMessage, res: ServerResponse, body: string): void;
}

export interface HostileServer extends AsyncDisposable {
  url: string;
  /** Websocket connections opened so far. */
  connections: () => number;
  /** HTTP requests answered so far. */
  httpRequests: () => number;
  sessions: HostileSession[];
}

/** Starts the hostile server on 127.0.0.1, port 0. */
export async function hostileServer(script: HostileScript = {}): Promise<HostileServer> {
  let connections = 0;
  let httpRequests = 0;
  const sessions: HostileSession[] = [];
  const http = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => {
      if (body.length < 1_000_000) body += chunk.toString();
    });
    req.on('end', () => {
      httpRequests++;
      if (script.onHttp) script.onHttp(req, res, body);
      else res.writeHead(404, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  // The headers a real server puts in its 101, so the agent signs its proof as usual.
  wss.on('headers', (headers) => {
    headers.push(`${SESSION_NONCE_HEADER}: hostile-nonce`, `${SERVER_TIME_HEADER}: ${Date.now()}`);
  });
  http.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const connection = ++connections;
      let subscriptionId: number | null = null;
      const session: HostileSession = {
        received: [],
        socket: ws,
        openedAt: Date.now(),
        send: (frame) => {
          if (ws.readyState === ws.OPEN) ws.send(frame, { binary: Buffer.isBuffer(frame) });
        },
        event: (data) => session.send(JSON.stringify({ id: subscriptionId, result: { type: 'data', data } })),
      };
      sessions.push(session);
      ws.on('error', () => {});
      const onMessage = (message: HostileSession['received'][number]) => {
        session.received.push(message);
        if (message.method === 'subscription' && message.params?.path === 'agent.session') {
          subscriptionId = message.id ?? null;
          session.send(JSON.stringify({ id: subscriptionId, result: { type: 'started' } }));
          if (script.onSubscribed) script.onSubscribed(session, connection);
          else session.event(readyEvent());
        } else if (message.method === 'mutation') {
          const answer = script.onMutation?.(message.params?.path ?? '', session);
          if (!answer) return;
          session.send(
            JSON.stringify(
              'data' in answer
                ? { id: message.id, result: { type: 'data', data: answer.data } }
                : { id: message.id, error: answer.error },
            ),
          );
        }
      };
      ws.on('message', (raw) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(String(raw));
        } catch {
          return;
        }
        // tRPC's client sends the requests queued in the same tick as one array, which its server
        // reads as that many messages.
        const messages = Array.isArray(parsed) ? parsed : [parsed];
        for (const message of messages)
          if (typeof message === 'object' && message !== null)
            onMessage(message as HostileSession['received'][number]);
      });
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    httpRequests: () => httpRequests,
    sessions,
    async [Symbol.asyncDispose]() {
      for (const client of wss.clients) client.terminate();
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
    },
  };
}

export const FAKE_CONNECTOR = 'con_hostiletest1';
export const FAKE_GROUP = 'grp_hostiletest1';

/** The `ready` event a server sends once a session is accepted. */
export function readyEvent() {
  return {
    type: 'ready',
    connectorId: FAKE_CONNECTOR,
    groupId: FAKE_GROUP,
    status: 'enabled',
    hostDigest: null,
  };
}

/** A tRPC error object with `reason` in its data, as the real server sends one. */
export function apiError(reason: string, extra: Record<string, unknown> = {}) {
  return { message: reason, code: -32600, data: { reason, ...extra } };
}

/**
 * A key pair for the agent and identities for it, shaped as the real server's (EdDSA, kid, iss,
 * aud, sub, group_id, cnf.jkt), signed by a key of the test's: what an agent enrolled with a real
 * server holds.
 */
export async function fakeIdentityMaker(issuer = 'http://enroll.test') {
  const pair = await generateAgentKeyPair();
  const jkt = await calculateJwkThumbprint(pair.publicJwk);
  const signer = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  /** A token for `claims` (defaults: this agent's connector, group and key) expiring in `lifetimeS`. */
  const token = async (
    lifetimeS = 86_400,
    claims: { sub?: string; group_id?: string; jkt?: string; kid?: string; iss?: string } = {},
  ) => {
    const now = Math.floor(Date.now() / 1000);
    const identityToken = await new SignJWT({
      group_id: claims.group_id ?? FAKE_GROUP,
      provisioning_key_id: 'pk_hostiletest1',
      cnf: { jkt: claims.jkt ?? jkt },
    })
      .setProtectedHeader({ alg: 'EdDSA', kid: claims.kid ?? 'kid-of-the-deployment', typ: 'JWT' })
      .setIssuer(claims.iss ?? issuer)
      .setSubject(claims.sub ?? FAKE_CONNECTOR)
      .setAudience(IDENTITY_AUDIENCE)
      .setJti(`j${Math.random()}`)
      .setIssuedAt(now)
      .setExpirationTime(now + lifetimeS)
      .sign(signer.privateKey);
    return { identityToken, identityExpiresAt: new Date((now + lifetimeS) * 1000).toISOString() };
  };
  /** The identity.json of an agent enrolled with `server`, its identity good for `lifetimeS`. */
  const savedIdentity = async (server: string, lifetimeS = 86_400) => ({
    connectorId: FAKE_CONNECTOR,
    groupId: FAKE_GROUP,
    server,
    ...(await token(lifetimeS)),
    privateJwk: pair.privateJwk,
    enrolledAt: new Date().toISOString(),
  });
  return { pair, jkt, token, savedIdentity };
}
