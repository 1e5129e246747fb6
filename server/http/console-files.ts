import { readdir, readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where `npm run build:console` puts the admin console (git-ignored). */
export const CONSOLE_DIR = fileURLToPath(new URL('../../web/dist/', import.meta.url));

/**
 * Headers of every console response. No inline script or style anywhere in the build, so the policy
 * needs no 'unsafe-inline'; 'self' in connect-src also covers ws: / wss: to the same host (CSP 3).
 */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
};

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
};

/** Only plain file names: a request can only ever name a file listed here, never a path. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

interface ConsoleFile {
  body: Buffer;
  type: string;
  cacheControl: string;
}

/** The built console in memory: `index.html` and `assets/<hashed name>`, by URL path. */
async function loadConsole(dir: string): Promise<Map<string, ConsoleFile> | null> {
  let index: Buffer;
  try {
    index = await readFile(join(dir, 'index.html'));
  } catch {
    return null;
  }
  const files = new Map<string, ConsoleFile>();
  // The index names the current hashed assets, so it is revalidated; the assets never change.
  files.set('/', { body: index, type: CONTENT_TYPES['.html']!, cacheControl: 'no-cache' });
  const names = await readdir(join(dir, 'assets')).catch(() => [] as string[]);
  for (const name of names) {
    const type = CONTENT_TYPES[extname(name)];
    if (!type || !SAFE_NAME.test(name)) continue;
    files.set(`/assets/${name}`, {
      body: await readFile(join(dir, 'assets', name)),
      type,
      cacheControl: 'public, max-age=31536000, immutable',
    });
  }
  return files;
}

const NOT_BUILT = `<!doctype html><meta charset="utf-8"><title>Console not built</title>
<p>The admin console has not been built. Run <code>npm run build:console</code> (npm start builds it by itself) and reload.</p>`;

/**
 * Serves the admin console at `/` and `/assets/…` from the build folder, read once (a missing build
 * is looked for again on the next request). Answers false for every other path, which stays the API's.
 */
export function consoleHandler(dir: string = CONSOLE_DIR) {
  let loading: Promise<Map<string, ConsoleFile> | null> | null = null;
  return async (req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> => {
    if (path !== '/' && !path.startsWith('/assets/')) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    loading ??= loadConsole(dir);
    const files = await loading;
    if (!files) loading = null;
    const file = files?.get(path);
    if (!file) {
      if (path !== '/') return false;
      res
        .writeHead(503, {
          ...CONSOLE_HEADERS,
          'content-type': CONTENT_TYPES['.html']!,
          'cache-control': 'no-store',
        })
        .end(NOT_BUILT);
      return true;
    }
    res.writeHead(200, {
      ...CONSOLE_HEADERS,
      'content-type': file.type,
      'cache-control': file.cacheControl,
      'content-length': file.body.length,
    });
    res.end(req.method === 'HEAD' ? undefined : file.body);
    return true;
  };
}
