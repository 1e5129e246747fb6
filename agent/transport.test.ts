import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { CLOSE_ANSWER_MS, createTransport, withSessionNonce } from './transport.js';

const servers: WebSocketServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    for (const client of server.clients) client.terminate();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A websocket server on loopback whose peer stops reading once the socket is open: a dead link. */
async function deadLinkServer(): Promise<string> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(server);
  server.on('connection', (_ws, req) => req.socket.pause());
  await new Promise((resolve) => server.once('listening', resolve));
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe("the agent's websocket", () => {
  it('a close nobody answers (a dead link) is cut after the close bound, not the 30 s ws waits by itself', async () => {
    const url = await deadLinkServer();
    const AgentWs = withSessionNonce(createTransport(null).WebSocket);
    const socket = new AgentWs(url);
    await new Promise((resolve) => socket.once('open', resolve));
    const started = performance.now();
    const closed = new Promise<number>((resolve) => socket.once('close', (code: number) => resolve(code)));
    socket.close();
    const code = await closed;
    const tookMs = performance.now() - started;
    expect(code).toBe(1006); // cut, not a close handshake
    expect(tookMs).toBeGreaterThanOrEqual(CLOSE_ANSWER_MS - 50);
    expect(tookMs).toBeLessThan(10_000);
  });
});
