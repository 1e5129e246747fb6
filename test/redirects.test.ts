import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AgentConfig } from '../agent/config.js';
import { createLogger } from '../agent/log.js';
import { runAgent } from '../agent/run.js';
import { EXIT } from '../agent/session.js';
import { tempDir } from './helpers/server.js';
import { createTestCa, issueServerCert, opensslAvailable } from './helpers/tls.js';

const KEY = 'cpk_redirect0test_secretpartthatmustnotleaveforthetarget000000';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A loopback listener (plain, or TLS with `tls`) that counts the requests it gets. */
async function listener(handler: Handler, tls?: { cert: Buffer; key: Buffer }) {
  const requests: string[] = [];
  let onRequest = () => {};
  const server = (tls ? createHttpsServer(tls) : createServer()).on('request', (req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on('end', () => {
      requests.push(`${req.method} ${req.url} ${body}`);
      handler(req, res);
      onRequest();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    /** Called after each request is answered. */
    set onRequest(fn: () => void) {
      onRequest = fn;
    },
    async [Symbol.asyncDispose]() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Where the redirect points: it answers like a server would, so an agent that got there would go on. */
const target = () =>
  listener((_req, res) => {
    res.writeHead(500, { 'content-type': 'application/json' }).end('{}');
  });

/** The --server the agent is given: every request is answered 307 to the same path on `to`. */
const redirecting = (to: string, tls?: { cert: Buffer; key: Buffer }) =>
  listener((req, res) => {
    res.writeHead(307, { location: `${to}${req.url}` }).end();
  }, tls);

/**
 * Runs the agent in process against `server` until it exits; bounded: stopped once the redirect's
 * target is reached or the front is asked a second time (the agent retrying), or after 20 s.
 */
async function runAgainst(
  server: string,
  caPem: string | null,
  watch: { target: { onRequest: () => void }; front: { onRequest: () => void; requests: string[] } },
) {
  const stateDir = await tempDir('ce-redirect-');
  const lines: string[] = [];
  const controller = new AbortController();
  watch.target.onRequest = () => controller.abort();
  watch.front.onRequest = () => {
    if (watch.front.requests.length > 1) controller.abort();
  };
  const timer = setTimeout(() => controller.abort(), 20_000);
  const config: AgentConfig = {
    servers: [server],
    provisioningKey: KEY,
    keyFileProblem: null,
    keyExposure: null,
    stateDir,
    name: 'redirected',
    caPem,
    allowInsecure: false,
    allowServerChange: false,
    logFormat: 'text',
  };
  try {
    const code = await runAgent(
      config,
      createLogger('text', (line) => lines.push(line)),
      controller.signal,
    );
    const status = JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as { state: string };
    return { code, lines, status, enrolled: existsSync(join(stateDir, 'identity.json')) };
  } finally {
    clearTimeout(timer);
    await rm(stateDir, { recursive: true, force: true });
  }
}

function expectRefusedRedirect(
  result: Awaited<ReturnType<typeof runAgainst>>,
  front: { requests: string[] },
  targetUrl: string,
) {
  expect(result.code, result.lines.join('\n')).toBe(EXIT.USAGE);
  expect(front.requests).toHaveLength(1);
  expect(result.enrolled).toBe(false);
  expect(result.status.state).toBe('refused');
  // One error line that names the refused Location and the fix.
  const errors = result.lines.filter((line) => line.includes(' error '));
  expect(errors).toHaveLength(1);
  expect(errors[0]).toContain(`${targetUrl}/trpc/agent.enroll`);
  expect(errors[0]).toContain('--server');
  expect(result.lines.join('\n')).not.toContain('retrying');
}

describe('the agent never follows a redirect with its provisioning key', () => {
  it('default transport (global fetch): a 307 to another listener is refused, exit 2, and the target gets nothing', async () => {
    await using to = await target();
    await using front = await redirecting(to.url);
    const result = await runAgainst(front.url, null, { target: to, front });
    expect(to.requests, 'the redirect target received the enrollment').toEqual([]);
    expectRefusedRedirect(result, front, to.url);
    expect(front.requests[0]).toContain(KEY);
  });

  it.skipIf(!opensslAvailable())(
    '--ca-file transport (node:https): a 307 is refused the same way, not retried',
    async () => {
      const dir = await tempDir('ce-redirect-pki-');
      try {
        const ca = await createTestCa(dir);
        const cert = await issueServerCert(ca, dir, 'front', { ips: ['127.0.0.1'] });
        const tls = { cert: await readFile(cert.certFile), key: await readFile(cert.keyFile) };
        await using to = await target();
        await using front = await redirecting(to.url, tls);
        const result = await runAgainst(front.url, ca.pem, { target: to, front });
        expect(to.requests, 'the redirect target received the enrollment').toEqual([]);
        expectRefusedRedirect(result, front, to.url);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
