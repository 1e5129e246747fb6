import { rm } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { AGENT_PING_MS, AGENT_PONG_WAIT_MS } from '../server/server-config.js';
import { spawnAgent, waitConnected } from './helpers/agents.js';
import { documentedNginxConfig, nginxAvailable, startNginx, substituted } from './helpers/nginx.js';
import { freshDatabase } from './helpers/postgres.js';
import { freePort } from './helpers/processes.js';
import { startReplicas, stopAll } from './helpers/replicas.js';
import { type TestServer, tempDir } from './helpers/server.js';
import { createTestCa, issueServerCert, opensslAvailable } from './helpers/tls.js';

// The nginx example of docs/deploy.md, run as written apart from the addresses, the certificate
// and (to see the pings at work without waiting minutes) the timeouts: the doc cannot drift from
// what is tested. Skipped without nginx on PATH, except in CI (.ci/run installs it), where a missing
// nginx fails it.
const runnable = (nginxAvailable() && opensslAvailable()) || process.env.CI === 'true';
if (!runnable) console.warn('test/nginx.test.ts skipped: no nginx or openssl on PATH (Debian: nginx-light)');

/** An agent process starts in ~2 s on an idle machine, several times that on a loaded two-core one. */
const AGENT_START_MS = 60_000;
/** In the test, nginx's idle timeout and the server's ping: the pings come well within the timeout. */
const PROXY_TIMEOUT_S = 3;
const TEST_PING_MS = 400;
/** The address nginx connects to the replicas from (any 127/8 address is local). */
const NGINX_SOURCE = '127.0.0.3';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

const seconds = (directive: string) => {
  const match = new RegExp(`\\b${directive} (\\d+)s;`).exec(documentedNginxConfig());
  if (!match) throw new Error(`no ${directive} in seconds in the documented nginx.conf`);
  return Number(match[1]);
};

describe('the documented nginx.conf (docs/deploy.md, "Several replicas behind nginx")', () => {
  it('keeps idle websockets open longer than the server waits before it pings and cuts a quiet agent', () => {
    const pingAndPongS = (AGENT_PING_MS + AGENT_PONG_WAIT_MS) / 1000;
    expect(seconds('proxy_read_timeout')).toBeGreaterThan(pingAndPongS);
    expect(seconds('proxy_send_timeout')).toBeGreaterThan(pingAndPongS);
    const config = documentedNginxConfig();
    const number = (directive: string) => Number(new RegExp(`\\b${directive} (\\d+);`).exec(config)?.[1]);
    // Two file descriptors per proxied websocket: the limit must cover every connection a worker takes.
    expect(number('worker_rlimit_nofile')).toBeGreaterThanOrEqual(number('worker_connections'));
  });
});

describe.skipIf(!runnable)('a real nginx with the documented config in front of two replicas', () => {
  it('an agent enrolls and connects through it, stays connected while idle, moves to the other replica when its own stops, and hears a revoke; the replicas see its own address', async () => {
    const dir = await tempDir('ce-nginx-tls-');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const ca = await createTestCa(dir);
    const cert = await issueServerCert(ca, dir, 'proxy', { ips: ['127.0.0.1'] });
    const port = await freePort();
    const publicUrl = `https://127.0.0.1:${port}`;
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    // nginx connects to the replicas from 127.0.0.3, the agent to nginx from 127.0.0.1: the replicas,
    // trusting nginx, take the agent's address from the X-Forwarded-For the documented config sets.
    const replicas = await startReplicas(db.url, 2, {
      config: { publicUrl, agentPingMs: TEST_PING_MS, trustedProxies: [NGINX_SOURCE] },
    });
    cleanups.push(() => stopAll(replicas));
    const [a, b] = replicas as [TestServer, TestServer];
    // With --public-url, a replica's url is nginx's: the admin calls go to each replica directly.
    const hostPort = (server: TestServer) => `127.0.0.1:${server.server.port}`;
    const admin = (server: TestServer) =>
      createAdminClient({ url: `http://${hostPort(server)}`, adminKey: server.adminKey });

    const config = substituted(documentedNginxConfig(), [
      ['10.0.0.11:7420', hostPort(a)],
      ['10.0.0.12:7420', hostPort(b)],
      ['listen 443 ssl;', `listen 127.0.0.1:${port} ssl;`],
      [
        'proxy_pass http://connector_replicas;',
        `proxy_pass http://connector_replicas;\n proxy_bind ${NGINX_SOURCE};`,
      ],
      ['/etc/letsencrypt/live/enroll.example.com/fullchain.pem', cert.certFile],
      ['/etc/letsencrypt/live/enroll.example.com/privkey.pem', cert.keyFile],
      [`proxy_read_timeout ${seconds('proxy_read_timeout')}s;`, `proxy_read_timeout ${PROXY_TIMEOUT_S}s;`],
      [`proxy_send_timeout ${seconds('proxy_send_timeout')}s;`, `proxy_send_timeout ${PROXY_TIMEOUT_S}s;`],
    ]);
    const nginx = await startNginx(config, port);
    cleanups.push(() => nginx.close());

    const group = await admin(a).groups.create.mutate({ name: 'Behind nginx' });
    const key = (await admin(a).provisioningKeys.get.query({ groupId: group.id })).key as string;
    const stateDir = await tempDir('ce-agent-');
    cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
    const agent = spawnAgent(
      ['--server', publicUrl, '--key', key, '--ca-file', ca.certFile, '--name', 'proxied'],
      stateDir,
    );
    cleanups.push(async () => {
      await agent.stop('SIGTERM', 5000);
    });
    const connectedCount = () => agent.output().split(`connected to ${publicUrl}`).length - 1;

    // Enrolled and connected through nginx, on one of the replicas.
    const connector = await waitConnected(admin(a), 'proxied', AGENT_START_MS);
    await expect.poll(() => a.server.hub.size + b.server.hub.size, { timeout: 10_000 }).toBe(1);
    const holder = a.server.hub.size === 1 ? a : b;
    const other = holder === a ? b : a;
    const first = await admin(holder).connectors.get.query({ connectorId: connector.id });
    expect(first.remoteAddress).toBe('127.0.0.1');

    // Idle for three of nginx's timeouts: the server's pings (and the agent's pongs) keep it open.
    await new Promise((resolve) => setTimeout(resolve, 3 * PROXY_TIMEOUT_S * 1000));
    const idle = await admin(holder).connectors.get.query({ connectorId: connector.id });
    expect(idle.connection).toBe('connected');
    expect(idle.lastConnectedAt).toBe(first.lastConnectedAt);
    expect(connectedCount()).toBe(1);
    expect(nginx.errorLog()).not.toMatch(/timed out/);

    // Its replica stops: nginx finds that one refusing and passes the reconnect to the other.
    await holder.stop();
    await expect.poll(() => other.server.hub.size, { timeout: 30_000, interval: 100 }).toBe(1);
    const moved = await admin(other).connectors.get.query({ connectorId: connector.id });
    expect(moved.connection).toBe('connected');
    expect(moved.lastConnectedAt).not.toBe(first.lastConnectedAt);
    expect(moved.remoteAddress).toBe('127.0.0.1');
    expect(connectedCount()).toBe(2);

    // A revoke through the admin API reaches the agent through nginx: it stops, told it is revoked.
    await admin(other).connectors.revoke.mutate({ connectorId: connector.id });
    const exit = await Promise.race([
      agent.exited,
      new Promise((resolve) => setTimeout(() => resolve('still running'), 20_000)),
    ]);
    expect(exit, agent.tail()).toMatchObject({ code: 4 });
  });
});
