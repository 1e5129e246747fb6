import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { type BaselineServer, type Closable, controlHandler } from './control.js';

/**
 * The platform's floor: a `ws` server holding bare connections, each known by the id in its URL
 * (`/ws?id=…&group=…`), nothing else per connection.
 */
export async function startBareServer(host: string, port: number): Promise<BaselineServer> {
  const sessions = new Map<string, Closable>();
  const payload = { body: '{}' };
  const server = createServer(controlHandler(sessions, payload));
  const wss = new WebSocketServer({ noServer: true, clientTracking: false, maxPayload: 65_536 });
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const id = url.searchParams.get('id') ?? '';
      const session: Closable = {
        group: url.searchParams.get('group') ?? '',
        end: (code, reason) => {
          ws.send(JSON.stringify({ type: code === 4003 ? 'revoked' : 'deleted' }));
          ws.close(code, reason);
        },
      };
      sessions.set(id, session);
      ws.on('error', () => {});
      ws.on('close', () => {
        if (sessions.get(id) === session) sessions.delete(id);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const actualPort = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${actualPort}`,
    port: actualPort,
    sessions: () => sessions.size,
    setPayload: (body) => {
      payload.body = body;
    },
    close: async () => {
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
