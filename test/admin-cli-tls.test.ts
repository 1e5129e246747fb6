import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { serverCli } from './helpers/cli.js';
import { freePort } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';
import { createTestCa, issueServerCert, opensslAvailable } from './helpers/tls.js';

/** The admin CLI as its own process: exit code and what it printed. */
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  serverCli(args, { CONNECTOR_CA_FILE: '', ...env });

/** One line, no stack, not Node's bare "fetch failed". */
function expectOneLine(stderr: string) {
  expect(stderr.trim().split('\n')).toHaveLength(1);
  expect(stderr).not.toMatch(/\n\s+at |fetch failed$/);
}

describe.skipIf(!opensslAvailable())(
  'admin CLI over TLS: --ca-file, and failures that say what failed and the fix',
  () => {
    it('trusts a private CA with --ca-file or CONNECTOR_CA_FILE; explains an untrusted certificate, a wrong host name, https against plain HTTP, a URL without a scheme and a refused connection', async () => {
      const dir = await tempDir('ce-admin-tls-');
      const ca = await createTestCa(dir);
      const good = await issueServerCert(ca, dir, 'localhost', { dns: ['localhost'], ips: ['127.0.0.1'] });
      const wrongHost = await issueServerCert(ca, dir, 'wrong-host', { dns: ['enroll.example.com'] });
      await using tls = await startTestServer({
        config: { tlsCertFile: good.certFile, tlsKeyFile: good.keyFile },
      });
      await using misnamed = await startTestServer({
        config: { tlsCertFile: wrongHost.certFile, tlsKeyFile: wrongHost.keyFile },
      });
      await using plain = await startTestServer();
      const key = (srv: { adminKey: string }) => ({ CONNECTOR_ADMIN_KEY: srv.adminKey });
      const closedPort = await freePort();

      // Four at a time: each is a node process starting tsx, on a machine of two cores.
      const [withFlag, withEnv, untrusted, hostName] = await Promise.all([
        cli(['groups', 'list', '--json', '--server', tls.url, '--ca-file', ca.certFile], key(tls)),
        cli(['groups', 'list', '--json', '--server', tls.url], {
          ...key(tls),
          CONNECTOR_CA_FILE: ca.certFile,
        }),
        cli(['groups', 'list', '--server', tls.url], key(tls)),
        cli(
          [
            'groups',
            'list',
            '--server',
            misnamed.url.replace('127.0.0.1', 'localhost'),
            '--ca-file',
            ca.certFile,
          ],
          key(misnamed),
        ),
      ]);
      const otherCaDir = await tempDir('ce-admin-tls-other-ca-');
      const otherCa = await createTestCa(otherCaDir);
      const [wrongCa, misnamedByIp] = await Promise.all([
        cli(['groups', 'list', '--server', tls.url, '--ca-file', otherCa.certFile], key(tls)),
        cli(['groups', 'list', '--server', misnamed.url, '--ca-file', ca.certFile], key(misnamed)),
      ]);
      const [httpsToPlain, noScheme, refused, missingCa] = await Promise.all([
        cli(['groups', 'list', '--server', plain.url.replace('http:', 'https:')], key(plain)),
        cli(['groups', 'list', '--server', plain.url.replace('http://', '')], key(plain)),
        cli(['groups', 'list', '--server', `http://127.0.0.1:${closedPort}`], key(plain)),
        cli(['groups', 'list', '--server', tls.url, '--ca-file', join(dir, 'nope.pem')], key(tls)),
      ]);

      expect(withFlag).toMatchObject({ code: 0 });
      expect(JSON.parse(withFlag.stdout)).toEqual([]);
      expect(withEnv).toMatchObject({ code: 0 });

      // A TLS misconfiguration, which a flag fixes: exit 2, as for the agent.
      expect(untrusted.code).toBe(2);
      expect(untrusted.stderr).toMatch(
        /is not trusted \([A-Z_]+\)\. If a private CA signed it, pass --ca-file/,
      );
      expect(untrusted.stderr).toContain(tls.url);
      expectOneLine(untrusted.stderr);

      // The CA given is not the one that signed it: not "pass --ca-file" again.
      expect(wrongCa.code).toBe(2);
      expect(wrongCa.stderr).toMatch(/is not trusted \([A-Z_]+\): the --ca-file given did not sign it/);
      expect(wrongCa.stderr).not.toContain('If a private CA signed it');
      expectOneLine(wrongCa.stderr);

      // The names the certificate holds, and the --server that would match, for a host name and for
      // an IP address (whose error from Node lists the certificate's IP addresses only).
      expect(hostName.code).toBe(2);
      expect(hostName.stderr).toContain(
        `is not for localhost but for enroll.example.com; use --server https://enroll.example.com:${new URL(misnamed.url).port}`,
      );
      expectOneLine(hostName.stderr);
      expect(misnamedByIp.code).toBe(2);
      expect(misnamedByIp.stderr).toMatch(
        /is not for 127\.0\.0\.1 but for enroll\.example\.com; use --server/,
      );

      expect(httpsToPlain.code).toBe(2);
      expect(httpsToPlain.stderr).toContain(
        `answered in plain text, not TLS: it serves http://, not https://. Use --server ${plain.url} if that server really is plain HTTP, or the URL of its TLS port.`,
      );
      expectOneLine(httpsToPlain.stderr);

      expect(noScheme.code).toBe(2);
      expect(noScheme.stderr).toMatch(/--server 127\.0\.0\.1:\d+: not an http:\/\/ or https:\/\/ URL/);
      expectOneLine(noScheme.stderr);

      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`http://127.0.0.1:${closedPort}: connection refused`);
      expect(refused.stderr).toMatch(/is the server running/);
      expectOneLine(refused.stderr);

      expect(missingCa.code).toBe(2);
      expect(missingCa.stderr).toMatch(/--ca-file: cannot read .*nope\.pem \(ENOENT\)/);
      expectOneLine(missingCa.stderr);

      await rm(dir, { recursive: true, force: true });
      await rm(otherCaDir, { recursive: true, force: true });
    });
  },
);
