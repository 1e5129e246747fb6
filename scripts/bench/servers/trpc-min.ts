import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { initTRPC } from '@trpc/server';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import { type WebSocket, WebSocketServer } from 'ws';
import { PROJECT_KEEPALIVE } from '../protocol.js';
import { type BaselineServer, type Closable, controlHandler } from './control.js';

interface MinContext {
  id: string;
  group: string;
  ws: WebSocket;
}

const t = initTRPC.context<MinContext>().create();
const handles = new Map<string, Closable>();

/**
 * The framework's floor: one subscription that does nothing until it is ended, when it sends one
 * event and closes the socket — the same shape as the project's `agent.session`, without its work.
 */
export const minRouter = t.router({
  session: t.procedure.subscription(async function* ({ ctx, signal }) {
    let ending: { code: number; reason: string } | null = null;
    let wake!: () => void;
    const ended = new Promise<void>((resolve) => {
      wake = resolve;
    });
    const handle: Closable = {
      group: ctx.group,
      end: (code, reason) => {
        ending = { code, reason };
        wake();
      },
    };
    handles.set(ctx.id, handle);
    signal?.addEventListener('abort', () => wake(), { once: true });
    try {
      await ended;
      if (ending) yield { type: 'ended' as const };
    } finally {
      if (handles.get(ctx.id) === handle) handles.delete(ctx.id);
      const final = ending as { code: number; reason: string } | null;
      if (final) ctx.ws.close(final.code, final.reason);
    }
  }),
});

export type MinRouter = typeof minRouter;

/** The minimal tRPC server: tRPC's ws adapter with the project's keepAlive, no auth, no store. */
export async function startMinTrpcServer(host: string, port: number): Promise<BaselineServer> {
  const payload = { body: '{}' };
  const server = createServer(controlHandler(handles, payload));
  const wss = new WebSocketServer({ noServer: true, clientTracking: false, maxPayload: 65_536 });
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  applyWSSHandler({
    wss,
    router: minRouter,
    maxBatchSize: 10,
    keepAlive: PROJECT_KEEPALIVE.server,
    createContext: ({ res, info }): MinContext => {
      const params = (info.connectionParams ?? {}) as Record<string, string>;
      return { id: params.id ?? '', group: params.group ?? '', ws: res };
    },
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const actualPort = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${actualPort}`,
    port: actualPort,
    sessions: () => handles.size,
    setPayload: (body) => {
      payload.body = body;
    },
    close: async () => {
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
