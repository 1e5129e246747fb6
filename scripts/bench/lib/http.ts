import { request } from 'node:http';

/**
 * A `fetch` for the agent's enrollment code that leaves from `localAddress` (127.0.0.x): undici's
 * global fetch cannot choose its source address. One fresh connection per request, as each real
 * agent is a different host.
 */
export function fetchFrom(localAddress: string): typeof fetch {
  const boundFetch = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> =>
    new Promise((resolve, reject) => {
      const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
      const headers = Object.fromEntries(new Headers(init.headers).entries());
      const req = request(
        url,
        { method: init.method ?? 'GET', headers, localAddress, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const responseHeaders = new Headers();
            for (const [name, value] of Object.entries(res.headers)) {
              if (typeof value === 'string') responseHeaders.set(name, value);
            }
            resolve(
              new Response(Buffer.concat(chunks), {
                status: res.statusCode ?? 500,
                headers: responseHeaders,
              }),
            );
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      init.signal?.addEventListener('abort', () => req.destroy(new Error('aborted')));
      if (init.body) req.write(init.body as string);
      req.end();
    });
  return boundFetch as typeof fetch;
}
