import type { ClientRequest, IncomingMessage } from 'node:http';
import type { RequestOptions } from 'node:https';

export type NodeRequest = (
  url: URL,
  options: RequestOptions,
  onResponse: (res: IncomingMessage) => void,
) => ClientRequest;

/**
 * A `fetch` over node:http or node:https with request options the global fetch cannot take (a CA to
 * trust, a source address). Enough for tRPC's httpLink: method, headers, a string body, abort.
 */
export function fetchVia(request: NodeRequest, extra: RequestOptions): typeof fetch {
  const viaNode = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> =>
    new Promise((resolve, reject) => {
      const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
      const headers = Object.fromEntries(new Headers(init.headers).entries());
      const req = request(url, { ...extra, method: init.method ?? 'GET', headers }, (res) => {
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
  return viaNode as typeof fetch;
}

/** TLS verification failures meaning "this certificate is not signed by a CA the agent trusts". */
const UNTRUSTED_CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/**
 * One line on why a request or websocket could not reach the server. Node hides the useful part
 * (e.g. `SELF_SIGNED_CERT_IN_CHAIN`) a few `cause`s deep behind "fetch failed"; certificate
 * problems also say what to do about them.
 */
export function describeNetworkError(error: unknown): string {
  let found: { code?: unknown; message?: unknown } | null = null;
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current && typeof current === 'object'; depth++) {
    const candidate = current as { code?: unknown; message?: unknown; cause?: unknown; error?: unknown };
    if (typeof candidate.code === 'string') found = candidate;
    // A websocket's ErrorEvent carries the error as `error`, fetch as `cause`.
    current = candidate.cause ?? candidate.error;
  }
  const innermost = found ?? (error as { message?: unknown } | null);
  const code = typeof found?.code === 'string' ? found.code : null;
  // OpenSSL's messages end in a newline: the result must stay one line.
  const message = (typeof innermost?.message === 'string' ? innermost.message : String(error))
    .trim()
    .replace(/\s+/g, ' ');
  const detail = code && !message.includes(code) ? `${code}: ${message}` : message;
  if (code && UNTRUSTED_CERT_CODES.has(code))
    return `TLS: the server's certificate is not trusted (${detail}); if a private CA signed it, pass --ca-file with that CA's certificate`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID')
    return `TLS: the server's certificate is not for this host name (${detail}); use a --server host name the certificate names`;
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/.test(message))
    return `TLS: the server did not answer in TLS (${code ?? 'wrong version number'}); it serves plain HTTP: use an http:// URL, or start the server with --tls-cert and --tls-key`;
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID')
    return `TLS: the server's certificate is outside its validity period (${detail}); check the server's certificate and this host's clock`;
  return detail;
}
