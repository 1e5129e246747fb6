import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { CONSOLE_DIR, consoleHandler } from '../../server/http/console-files.js';
import { startTestServer } from '../helpers/server.js';

/** A GET with the path sent exactly as written (fetch would normalize `..` away). */
function rawGet(url: string, path: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    request({ hostname, port, path, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}

describe('the admin console served at /', () => {
  it('serves the built index and its hashed assets with the security headers; the API is unchanged', async () => {
    await using server = await startTestServer();
    const index = await fetch(`${server.url}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = index.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(index.headers.get('x-content-type-options')).toBe('nosniff');
    expect(index.headers.get('referrer-policy')).toBe('no-referrer');
    const html = await index.text();
    expect(html).toBe(await readFile(join(CONSOLE_DIR, 'index.html'), 'utf8'));
    // No inline script: every <script> has a src.
    expect(html.match(/<script(?![^>]*\bsrc=)[^>]*>/g)).toBeNull();

    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1]!;
    const asset = await fetch(`${server.url}${script}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(asset.headers.get('cache-control')).toContain('immutable');
    expect(asset.headers.get('x-content-type-options')).toBe('nosniff');

    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const unknown = await fetch(`${server.url}/nope`);
    expect([unknown.status, await unknown.json()]).toEqual([404, { error: 'not found' }]);
    expect((await fetch(`${server.url}/`, { method: 'POST' })).status).toBe(404);
  });

  it('never serves a file outside the build, however the path is written', async () => {
    await using server = await startTestServer();
    for (const path of [
      '/assets/../package.json',
      '/assets/%2e%2e/package.json',
      '/assets/%2e%2e%2fpackage.json',
      '/assets/..%2f..%2fpackage.json',
      '/assets/.build-hash',
      '/../.build-hash',
      '/index.html/../../package.json',
      '/assets/',
    ]) {
      const { status, body } = await rawGet(server.url, path);
      expect({ path, status }).toEqual({ path, status: 404 });
      expect(body).toBe('{"error":"not found"}');
    }
  });

  it('answers 503 with what to run when the console has not been built, and serves it once it is', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ce-console-'));
    const handle = consoleHandler(dir);
    const server = createServer(async (req, res) => {
      if (!(await handle(req, res, req.url ?? '/'))) res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const missing = await fetch(`${url}/`);
      expect(missing.status).toBe(503);
      expect(await missing.text()).toContain('npm run build:console');
      await mkdir(join(dir, 'assets'));
      await writeFile(join(dir, 'index.html'), '<!doctype html><title>built</title>');
      await writeFile(join(dir, 'assets', 'app-1.js'), 'export {};');
      expect(await (await fetch(`${url}/`)).text()).toContain('built');
      expect((await fetch(`${url}/assets/app-1.js`)).status).toBe(200);
    } finally {
      await new Promise((resolve) => server.close(resolve));
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a server whose console is not built says so once at start (a warning naming the folder), and answers the API', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ce-console-none-'));
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    try {
      await using server = await startTestServer({ logger, config: { consoleDir: dir } });
      const warned = lines.filter((l) => String(l.msg).startsWith('the admin console is not built'));
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: 40, dir });
      expect(String(warned[0]!.msg)).toContain('npm run build:console');
      expect((await fetch(`${server.url}/`)).status).toBe(503);
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      expect(await server.admin.groups.list.query({})).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a server whose console is built says nothing of it', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    await using server = await startTestServer({ logger });
    expect((await fetch(`${server.url}/`)).status).toBe(200);
    expect(lines.filter((l) => String(l.msg).includes('console is not built'))).toEqual([]);
  });
});
