import { existsSync } from 'node:fs';
import { chmod, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createTransport } from '../agent/transport.js';
import { createAdminClient } from '../server/admin-client.js';
import { ManualClock } from '../server/clock.js';
import { systemMeta } from '../server/services/deps.js';
import { eventually, readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { freePort, spawnTs } from './helpers/processes.js';
import { startRelay } from './helpers/relay.js';
import { startTestServer, tempDir } from './helpers/server.js';
import {
  createTestCa,
  issueServerCert,
  opensslAvailable,
  type TestCa,
  type TestCert,
} from './helpers/tls.js';

const hasOpenssl = opensslAvailable();

/** A throwaway CA, a certificate for localhost/127.0.0.1 and one for another host name, all signed by it. */
async function pki() {
  const dir = await tempDir('ce-pki-');
  const ca = await createTestCa(dir);
  const good = await issueServerCert(ca, dir, 'localhost', { dns: ['localhost'], ips: ['127.0.0.1'] });
  const wrongHost = await issueServerCert(ca, dir, 'wrong-host', { dns: ['enroll.example.com'] });
  return { dir, ca, good, wrongHost };
}

/** An in-process server on https, and an admin client that trusts the throwaway CA. */
async function tlsServer(ca: TestCa, cert: TestCert) {
  const srv = await startTestServer({ config: { tlsCertFile: cert.certFile, tlsKeyFile: cert.keyFile } });
  const caFetch = createTransport(ca.pem).fetch;
  const admin = createAdminClient({ url: srv.url, adminKey: srv.adminKey, fetch: caFetch });
  return { srv, admin, caFetch, localhostUrl: `https://localhost:${srv.server.port}` };
}

describe.skipIf(!hasOpenssl)(
  'TLS: HTTPS and WSS with a private CA (openssl makes a throwaway CA per run)',
  () => {
    it('one port serves HTTPS and WSS: the agent with --ca-file enrolls and connects over TLS; the admin client works over https', async () => {
      const { dir, ca, good } = await pki();
      const { srv, admin, caFetch, localhostUrl } = await tlsServer(ca, good);
      await using _ = srv;
      expect(srv.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);

      // The TLS port speaks nothing but TLS: a plain-HTTP request gets no answer from the API.
      const plain = await fetch(`http://127.0.0.1:${srv.server.port}/healthz`).then(
        (r) => r.status,
        () => 'no answer',
      );
      expect(plain).not.toBe(200);
      const health = await caFetch(`${srv.url}/healthz`);
      expect(health.status).toBe(200);

      const group = await admin.groups.create.mutate({ name: 'Over TLS' });
      const key = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const stateDir = await tempDir('ce-tls-agent-');
      const agent = spawnAgent(
        ['--server', localhostUrl, '--key', key, '--ca-file', ca.certFile, '--name', 'tls-agent'],
        stateDir,
      );
      const connector = await waitConnected(admin, 'tls-agent');
      expect(agent.output()).toContain(`connecting to wss://localhost:${srv.server.port}/trpc`);
      const identity = await readIdentity(stateDir);
      expect(identity?.connectorId).toBe(connector.id);
      agent.kill('SIGTERM');
      expect((await agent.exited).code).toBe(0);

      // The same enrolled agent without the CA: the websocket's certificate check fails. Not
      // something a retry fixes: the agent stops (exit 2) with the fix, its identity untouched.
      const untrusting = spawnAgent(['--server', localhostUrl], stateDir);
      expect((await untrusting.exited).code).toBe(2);
      expect(untrusting.output()).toMatch(
        /error TLS: the certificate of https:\/\/localhost:\d+ is not trusted \([A-Z_]+\)\. If a private CA signed it, pass --ca-file/,
      );
      expect(untrusting.output()).not.toContain('retrying');
      expect((await readIdentity(stateDir))?.identityToken).toBe(identity?.identityToken);
      const status = JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8'));
      expect(status.state).toBe('misconfigured');
      expect((await admin.connectors.get.query({ connectorId: connector.id })).status).toBe('enabled');
      await rm(stateDir, { recursive: true, force: true });
      await rm(dir, { recursive: true, force: true });
    });

    it('an untrusted certificate (no --ca-file) and a certificate for another host name are refused at enrollment: exit 2 with the fix, no retry, nothing written', async () => {
      const { dir, ca, good, wrongHost } = await pki();
      const trusted = await tlsServer(ca, good);
      await using _a = trusted.srv;
      const misnamed = await tlsServer(ca, wrongHost);
      await using _b = misnamed.srv;
      // Keys straight from the services: the misnamed server's API cannot be reached over TLS at all.
      const keyOf = async (srv: typeof trusted.srv, name: string) => {
        const { services } = srv.server;
        const group = await services.groups.create({ name }, systemMeta);
        return services.provisioningKeys.get(group.id).key!;
      };
      await expect(misnamed.admin.groups.list.query({})).rejects.toThrow();

      const dirs = [await tempDir('ce-tls-noca-'), await tempDir('ce-tls-name-')];
      const noCa = spawnAgent(
        ['--server', trusted.localhostUrl, '--key', await keyOf(trusted.srv, 'A')],
        dirs[0]!,
      );
      const wrongName = spawnAgent(
        [
          '--server',
          misnamed.localhostUrl,
          '--key',
          await keyOf(misnamed.srv, 'B'),
          '--ca-file',
          ca.certFile,
        ],
        dirs[1]!,
      );
      expect((await noCa.exited).code).toBe(2);
      expect(noCa.output()).toMatch(
        /TLS: the certificate of https:\/\/localhost:\d+ is not trusted.*--ca-file/,
      );
      expect((await wrongName.exited).code).toBe(2);
      expect(wrongName.output()).toContain(
        `TLS: the certificate of ${misnamed.localhostUrl} is not for localhost but for enroll.example.com; ` +
          `use --server https://enroll.example.com:${misnamed.srv.server.port}`,
      );
      for (const [agent, stateDir] of [
        [noCa, dirs[0]!],
        [wrongName, dirs[1]!],
      ] as const) {
        expect(agent.output()).not.toContain('retrying');
        expect(existsSync(join(stateDir, 'identity.json'))).toBe(false);
        const status = JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8'));
        expect(status.state).toBe('misconfigured');
      }
      // A --ca-file of another CA: the flag is there, the CA is the wrong one, and it says that.
      const otherCa = await createTestCa(await tempDir('ce-pki-other-'));
      const otherDir = await tempDir('ce-tls-other-ca-');
      const wrongCa = spawnAgent(
        [
          '--server',
          trusted.localhostUrl,
          '--key',
          await keyOf(trusted.srv, 'C'),
          '--ca-file',
          otherCa.certFile,
        ],
        otherDir,
      );
      expect((await wrongCa.exited).code).toBe(2);
      expect(wrongCa.output()).toMatch(
        /TLS: the certificate of https:\/\/localhost:\d+ is not trusted \([A-Z_]+\): the --ca-file given did not sign it/,
      );
      expect(trusted.srv.server.services.connectors.counts().total).toBe(0);
      expect(misnamed.srv.server.services.connectors.counts().total).toBe(0);
      for (const d of [...dirs, dir, otherDir]) await rm(d, { recursive: true, force: true });
    });

    it('one server of several with a certificate the agent does not trust is passed over, at enrollment and at a reconnect; the agent stays up', async () => {
      const { dir, ca, good } = await pki();
      // A second deployment's CA: the agent (given only the first) trusts none of its certificates.
      const strangerCa = await createTestCa(dir, 'stranger-ca');
      const stranger = await issueServerCert(strangerCa, dir, 'stranger', { ips: ['127.0.0.1'] });
      const trusted = await tlsServer(ca, good);
      await using _a = trusted.srv;
      const untrusted = await tlsServer(strangerCa, stranger);
      await using _b = untrusted.srv;
      // The trusted server behind a relay, so that its sessions can be cut (a network reset).
      const relay = await startRelay(trusted.srv.url);
      const relayed = `https://127.0.0.1:${relay.port}`;
      const group = await trusted.admin.groups.create.mutate({ name: 'Mixed TLS' });
      const key = (await trusted.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const stateDir = await tempDir('ce-tls-mixed-');
      const agent = spawnAgent(
        [
          '--server',
          `${untrusted.srv.url},${relayed}`,
          '--key',
          key,
          '--ca-file',
          ca.certFile,
          '--name',
          'mixed-tls',
        ],
        stateDir,
      );
      try {
        await waitConnected(trusted.admin, 'mixed-tls', 60_000);
        // The session is lost: the agent moves to the next server, the untrusted one, and passes it over.
        relay.partition();
        relay.heal();
        await eventually(
          'passed over at a reconnect',
          async () => agent.output().includes('a server failed the TLS checks; trying the next one'),
          30_000,
        );
        await waitConnected(trusted.admin, 'mixed-tls', 30_000);
        expect(agent.output()).toContain(`TLS: the certificate of ${untrusted.srv.url} is not trusted`);
        expect(agent.exit()).toBeNull();
      } finally {
        await agent.stop();
        await relay.close();
        await rm(dir, { recursive: true, force: true });
        await rm(stateDir, { recursive: true, force: true });
      }
    });

    it('a certificate about to expire, or expired, is said at start (not refused): agents would refuse it, retrying', async () => {
      const { dir, good } = await pki(); // valid for one day from now
      const startWith = async (clock: ManualClock) => {
        const lines: Array<{ msg: string; level: number }> = [];
        const logger = pino(
          { level: 'warn' },
          { write: (line: string) => void lines.push(JSON.parse(line)) },
        );
        const srv = await startTestServer({
          clock,
          logger,
          config: { tlsCertFile: good.certFile, tlsKeyFile: good.keyFile },
        });
        await srv[Symbol.asyncDispose]();
        return lines.filter((l) => l.msg.startsWith(`--tls-cert ${good.certFile}`)).map((l) => l.msg);
      };
      expect(await startWith(new ManualClock(Date.now()))).toEqual([
        expect.stringMatching(/ expires on \S+, in 1 day\(s\): renew it before then$/),
      ]);
      expect(await startWith(new ManualClock(Date.now() + 3 * 86_400_000))).toEqual([
        expect.stringMatching(/ expired on \S+: agents and clients refuse it; renew it$/),
      ]);
      expect(await startWith(new ManualClock(Date.now() - 3 * 86_400_000))).toEqual([
        expect.stringMatching(
          / is valid only from \S+: agents and clients refuse it until then \(is this host's clock right\?\)$/,
        ),
      ]);
      await rm(dir, { recursive: true, force: true });
    });

    it('http:// to the TLS port: the agent and the CLI say it speaks https, exit 2, no retry (before: "is it running?" and retries for ever)', async () => {
      const { dir, ca, good } = await pki();
      const { srv } = await tlsServer(ca, good);
      await using _ = srv;
      const plainUrl = `http://127.0.0.1:${srv.server.port}`;
      const fix = `${plainUrl} speaks TLS (https), not plain HTTP: use https://127.0.0.1:${srv.server.port}`;
      const group = await srv.server.services.groups.create({ name: 'Plain' }, systemMeta);
      const stateDir = await tempDir('ce-tls-plain-');
      const agent = spawnAgent(
        ['--server', plainUrl, '--key', srv.server.services.provisioningKeys.get(group.id).key!],
        stateDir,
      );
      expect((await agent.exited).code).toBe(2);
      expect(agent.output()).toContain(`TLS: ${fix} as --server`);
      expect(agent.output()).not.toContain('retrying');
      const cli = spawnTs('server/main.ts', ['groups', 'list', '--server', plainUrl], {
        env: { ...process.env, CONNECTOR_ADMIN_KEY: srv.adminKey },
      });
      expect((await cli.exited).code).toBe(2);
      expect(cli.output().trim()).toBe(`error: cannot reach the server: ${fix} (--server)`);
      for (const d of [stateDir, dir]) await rm(d, { recursive: true, force: true });
    });

    it('--ca-file with an http:// server (a plain one on loopback, or the TLS port by mistake): as without it, not "Protocol http: not supported" retried for ever', async () => {
      const { dir, ca, good } = await pki();
      await using plain = await startTestServer();
      const plainGroup = await plain.admin.groups.create.mutate({ name: 'Plain with a CA' });
      const plainKey = (await plain.admin.provisioningKeys.get.query({ groupId: plainGroup.id })).key!;
      const plainDir = await tempDir('ce-tls-plain-ca-');
      const agent = spawnAgent(
        ['--server', plain.url, '--key', plainKey, '--ca-file', ca.certFile, '--name', 'plain-ca'],
        plainDir,
      );
      try {
        await waitConnected(plain.admin, 'plain-ca', 60_000);
      } finally {
        agent.kill('SIGTERM');
        await agent.exited;
      }
      expect(agent.output()).not.toContain('ERR_INVALID_PROTOCOL');

      const { srv } = await tlsServer(ca, good);
      await using _ = srv;
      const plainUrl = `http://127.0.0.1:${srv.server.port}`;
      const group = await srv.server.services.groups.create({ name: 'Mistaken' }, systemMeta);
      const stateDir = await tempDir('ce-tls-mistaken-');
      const mistaken = spawnAgent(
        [
          '--server',
          plainUrl,
          '--key',
          srv.server.services.provisioningKeys.get(group.id).key!,
          '--ca-file',
          ca.certFile,
        ],
        stateDir,
      );
      expect((await mistaken.exited).code).toBe(2);
      expect(mistaken.output()).toContain(`TLS: ${plainUrl} speaks TLS (https), not plain HTTP`);
      for (const d of [plainDir, stateDir, dir]) await rm(d, { recursive: true, force: true });
    });

    it('an enrolled agent pointed at the TLS port with http:// (the server moved to https): exit 2 with the fix at its first connect, not retries for ever', async () => {
      const { dir, ca, good } = await pki();
      const { srv } = await tlsServer(ca, good);
      await using _ = srv;
      const httpsUrl = `https://127.0.0.1:${srv.server.port}`;
      const plainUrl = `http://127.0.0.1:${srv.server.port}`;
      const group = await srv.server.services.groups.create({ name: 'Moved' }, systemMeta);
      const key = srv.server.services.provisioningKeys.get(group.id).key!;
      const stateDir = await tempDir('ce-tls-moved-');
      const enrolled = spawnAgent(['--server', httpsUrl, '--key', key, '--ca-file', ca.certFile], stateDir);
      await enrolled.waitForOutput(/connected to https/);
      enrolled.kill('SIGTERM');
      expect((await enrolled.exited).code).toBe(0);

      const moved = spawnAgent(['--server', plainUrl, '--allow-server-change'], stateDir);
      expect((await moved.exited).code).toBe(2);
      expect(moved.output()).toContain(
        `TLS: ${plainUrl} speaks TLS (https), not plain HTTP: use ${httpsUrl} as --server (with --allow-server-change)`,
      );
      expect(JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')).state).toBe('misconfigured');
      // The identity is kept: the fix is a flag, not a new enrollment.
      expect(existsSync(join(stateDir, 'identity.json'))).toBe(true);
      for (const d of [stateDir, dir]) await rm(d, { recursive: true, force: true });
    });

    it('backup of a running TLS server: --ca-file (or CONNECTOR_CA_FILE) trusts its CA, admin.key is found through CONNECTOR_DATA_DIR; without the CA it says the certificate is not trusted', async () => {
      const { dir, ca, good } = await pki();
      const { srv } = await tlsServer(ca, good);
      await using _ = srv;
      const httpsUrl = `https://127.0.0.1:${srv.server.port}`;
      const out = join(dir, 'tls.backup');
      const env: NodeJS.ProcessEnv = { ...process.env, CONNECTOR_DATA_DIR: srv.dataDir };
      delete env.CONNECTOR_ADMIN_KEY;
      const untrusted = spawnTs('server/main.ts', ['backup', '--out', out, '--server', httpsUrl], { env });
      expect((await untrusted.exited).code).toBe(2);
      expect(untrusted.output()).toMatch(
        /cannot reach the server: TLS: the certificate of https:\/\/127\.0\.0\.1:\d+ is not trusted \([A-Z_]+\)\. If a private CA signed it, pass --ca-file/,
      );
      const flagged = spawnTs(
        'server/main.ts',
        ['backup', '--out', out, '--server', httpsUrl, '--ca-file', ca.certFile],
        { env },
      );
      expect((await flagged.exited).code, flagged.output()).toBe(0);
      expect(flagged.output()).toContain(`backup written to ${out}`);
      const fromEnv = spawnTs('server/main.ts', ['backup', '--out', `${out}.2`, '--server', httpsUrl], {
        env: { ...env, CONNECTOR_CA_FILE: ca.certFile },
      });
      expect((await fromEnv.exited).code, fromEnv.output()).toBe(0);
      await rm(dir, { recursive: true, force: true });
    });

    it('serve --tls-cert --tls-key prints an https URL; the admin CLI reaches it trusting the CA via NODE_EXTRA_CA_CERTS; bad TLS files stop it before the data dir is touched', async () => {
      const { dir, ca, good } = await pki();
      const dataDir = join(dir, 'data');
      const port = await freePort();
      const serve = (dataDir: string, cert: string, key: string, p = port) =>
        spawnTs('server/main.ts', [
          'serve',
          '--data-dir',
          dataDir,
          '--port',
          String(p),
          '--log-level',
          'warn',
          '--tls-cert',
          cert,
          '--tls-key',
          key,
        ]);
      await chmod(good.keyFile, 0o600);
      const server = serve(dataDir, good.certFile, good.keyFile);
      await server.waitForOutput(new RegExp(`listening on https://127\\.0\\.0\\.1:${port};`));

      const cli = spawnTs(
        'server/main.ts',
        [
          'groups',
          'create',
          'Cli over TLS',
          '--server',
          `https://localhost:${port}`,
          '--data-dir',
          dataDir,
          '--json',
        ],
        { env: { ...process.env, NODE_EXTRA_CA_CERTS: ca.certFile } },
      );
      expect((await cli.exited).code, cli.output()).toBe(0);
      expect(JSON.parse(cli.output())).toMatchObject({ name: 'Cli over TLS' });
      server.kill('SIGTERM');
      expect((await server.exited).code).toBe(0);
      expect(server.output()).not.toContain('can be read by every user');

      // A private key every user of the host can read: said at start (not refused: 0640 with a
      // group is a sound setup, and a server running today must not stop at its next restart).
      await chmod(good.keyFile, 0o644);
      const exposed = serve(join(dir, 'exposed'), good.certFile, good.keyFile, 0);
      await exposed.waitForOutput(
        new RegExp(
          `--tls-key ${good.keyFile.replaceAll('.', '\\.')} can be read by every user of this host \\(mode 644\\): chmod 600 it`,
        ),
      );
      await exposed.waitForOutput(/listening on https:/);
      exposed.kill('SIGTERM');
      expect((await exposed.exited).code).toBe(0);

      const cases = [
        {
          cert: join(dir, 'missing.pem'),
          key: good.keyFile,
          says: /--tls-cert .*missing\.pem: cannot read it \(ENOENT: no such file: check the path\)/,
        },
        // Each file on its own, named, with what it must hold (not OpenSSL's "no start line" alone).
        {
          cert: good.keyFile,
          key: good.keyFile,
          says: /--tls-cert \S+: not a PEM certificate \("-----BEGIN CERTIFICATE-----"/,
        },
        {
          cert: good.certFile,
          key: good.certFile,
          says: /--tls-key \S+: not an unencrypted PEM private key \("-----BEGIN PRIVATE KEY-----"/,
        },
        // Both fine, but not a pair.
        { cert: good.certFile, key: ca.keyFile, says: /: the key is not the certificate's \(use the key/ },
      ];
      for (const c of cases) {
        const fresh = join(dir, 'untouched');
        const bad = serve(fresh, c.cert, c.key, 0);
        expect((await bad.exited).code).toBe(1);
        expect(bad.output()).toMatch(c.says);
        expect(existsSync(fresh)).toBe(false);
      }
      await rm(dir, { recursive: true, force: true });
    });
  },
);

describe('https:// to a server that speaks plain http', () => {
  it('enrolling or connecting: exit 2 with one line that says use http://, never a raw OpenSSL error, no retry', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Plain' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const httpsUrl = srv.url.replace(/^http:/, 'https:');
    const fix = `TLS: ${httpsUrl} answered in plain text, not TLS: it serves http://, not https://. Use --server ${srv.url}`;

    const fresh = await tempDir('ce-tls-plain-');
    const enrolling = spawnAgent(['--server', httpsUrl, '--key', key], fresh);
    expect((await enrolling.exited).code).toBe(2);
    expect(enrolling.output()).toContain(fix);
    expect(enrolling.output()).not.toMatch(/openssl|ssl3_get_record|retrying/);
    expect(
      enrolling
        .output()
        .trim()
        .split('\n')
        .filter((l) => l.includes('error')),
    ).toHaveLength(1);
    expect(existsSync(join(fresh, 'identity.json'))).toBe(false);

    // Enrolled over http, then pointed at https (the server move is allowed): the session's connect.
    const enrolled = await tempDir('ce-tls-plain-session-');
    const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'plain'], enrolled);
    await waitConnected(srv.admin, 'plain');
    agent.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    const moved = spawnAgent(['--server', httpsUrl, '--allow-server-change'], enrolled);
    expect((await moved.exited).code).toBe(2);
    expect(moved.output()).toContain(fix);
    expect(moved.output()).not.toMatch(/openssl|ssl3_get_record|retrying/);
    expect(await readIdentity(enrolled)).not.toBeNull();
    for (const d of [fresh, enrolled]) await rm(d, { recursive: true, force: true });
  });
});
