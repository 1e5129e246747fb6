import { request as httpsRequest } from 'node:https';
import WebSocket from 'ws';

/**
 * The HTTP and websocket transports, trusting a private CA when one is given. Node's global fetch
 * takes no CA option, so with --ca-file requests go through node:https instead.
 */
export function createTransport(caPem: string | null) {
  if (!caPem) return { fetch: globalThis.fetch, WebSocket };
  const ca = caPem;
  class CaWebSocket extends WebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols, { ca });
    }
  }
  const caFetch = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> =>
    new Promise((resolve, reject) => {
      const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
      const headers = Object.fromEntries(new Headers(init.headers).entries());
      const req = httpsRequest(url, { method: init.method ?? 'GET', headers, ca }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (typeof value === 'string') responseHeaders.set(name, value);
          }
          resolve(
            new Response(Buffer.concat(chunks), { status: res.statusCode ?? 500, headers: responseHeaders }),
          );
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      init.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')));
      if (init.body) req.write(init.body as string);
      req.end();
    });
  return { fetch: caFetch as typeof fetch, WebSocket: CaWebSocket as unknown as typeof WebSocket };
}

export type Transport = ReturnType<typeof createTransport>;
