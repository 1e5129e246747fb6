import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { spawnAgent } from './helpers/agents.js';
import { serverCli } from './helpers/cli.js';
import { settleWithin } from './helpers/processes.js';
import { startTestServer, tempDir } from './helpers/server.js';
import { createTestCa, opensslAvailable } from './helpers/tls.js';

/** What an agent can tell is wrong before it sends anything: a usage error (exit 2), no key spent. */
describe('agent input it checks itself', () => {
  it('a --name the server would refuse, and an admin key given as the provisioning key: exit 2, nothing sent, no key echoed', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Checked' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;

    const long = spawnAgent(
      ['--server', srv.url, '--key', key, '--name', 'x'.repeat(300)],
      await tempDir('ce-in-'),
    );
    expect((await long.exited).code).toBe(2);
    expect(long.output()).toMatch(/--name: .*64/);
    const control = spawnAgent(
      ['--server', srv.url, '--key', key, '--name', 'bad\nname'],
      await tempDir('ce-in-'),
    );
    expect((await control.exited).code).toBe(2);
    expect(control.output()).toMatch(/--name: .*U\+000A/);

    const adminKey = (await readFile(join(srv.dataDir, 'admin.key'), 'utf8')).trim();
    const wrongKind = spawnAgent(['--server', srv.url, '--key', adminKey], await tempDir('ce-in-'));
    expect((await wrongKind.exited).code).toBe(2);
    expect(wrongKind.output()).toContain('the key given is an admin API key (cak_…), not a group');
    expect(wrongKind.output()).not.toContain(adminKey);

    // Anything else than a provisioning key's shape (a key cut short, a wrong file) is not sent either.
    const dir = await tempDir('ce-in-');
    const wrongFile = join(dir, 'shadow');
    await writeFile(wrongFile, 'root:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n', { mode: 0o600 });
    for (const given of [
      ['--key-file', wrongFile],
      ['--key', key.slice(0, -5)],
    ]) {
      const agent = spawnAgent(['--server', srv.url, ...given], await tempDir('ce-in-'));
      expect((await agent.exited).code).toBe(2);
      expect(agent.output()).toContain('the key given is not a provisioning key');
      expect(agent.output()).not.toMatch(/root:|hashhash/);
      expect(agent.output()).not.toContain(key.slice(0, -5));
    }

    // None of them reached the server.
    expect(await srv.admin.audit.list.query({ type: 'enrollment' })).toEqual([]);
    expect((await srv.admin.connectors.list.query({})).items).toEqual([]);
  });

  it('a --key-file that is empty, missing or a directory: exit 2, one line saying what to put there and where the key comes from (it said only "is empty" or "cannot read X (EISDIR)")', async () => {
    const dir = await tempDir('ce-in-');
    const empty = join(dir, 'empty.key');
    await writeFile(empty, '\n', { mode: 0o600 });
    const asDir = join(dir, 'mounted.key');
    await mkdir(asDir);
    const missing = join(dir, 'missing.key');
    for (const [file, said] of [
      [empty, `--key-file ${empty} is empty: write the group's provisioning key into it`],
      [
        asDir,
        `--key-file ${asDir} is a directory, not a file: pass the file that holds the group's provisioning key`,
      ],
      [missing, `--key-file ${missing} does not exist: write the group's provisioning key into it`],
    ] as const) {
      const agent = spawnAgent(
        ['--server', 'http://127.0.0.1:2', '--key-file', file],
        await tempDir('ce-in-'),
      );
      expect((await agent.exited).code, agent.output()).toBe(2);
      const lines = agent.output().trim().split('\n');
      expect(lines, agent.output()).toHaveLength(1);
      expect(lines[0]).toContain(said);
      expect(lines[0]).toContain('connector-server groups key GROUP');
    }
  });

  it('NODE_TLS_REJECT_UNAUTHORIZED=0 in its environment (certificates unchecked for enrollment and the session) is said once, at start, with the fix; it was silent', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Unchecked' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const said = 'NODE_TLS_REJECT_UNAUTHORIZED=0 is set: server certificates are not checked';
    const unchecked = spawnAgent(
      ['--server', srv.url, '--key', key, '--name', 'unchecked'],
      await tempDir('ce-in-'),
      {
        NODE_TLS_REJECT_UNAUTHORIZED: '0',
      },
    );
    try {
      await unchecked.waitForOutput(/connected to/);
      const lines = unchecked.output().trim().split('\n');
      expect(
        lines.filter((line) => line.includes(said)),
        unchecked.output(),
      ).toHaveLength(1);
      expect(lines[0]).toContain(`warn  ${said}`);
      expect(lines[0]).toContain('Unset it; to trust a private CA, pass --ca-file');
    } finally {
      await unchecked.stop('SIGTERM');
    }
    // Checked (unset, or any other value: Node turns them off only for "0"): nothing said.
    for (const value of [undefined, '1']) {
      const checked = spawnAgent(['--server', srv.url], await tempDir('ce-in-'), {
        NODE_TLS_REJECT_UNAUTHORIZED: value,
      });
      expect((await checked.exited).code, checked.output()).toBe(2);
      expect(checked.output()).not.toContain('NODE_TLS_REJECT_UNAUTHORIZED');
    }
  });

  it('a key given where other users can read it (--key on the command line, a key file open to them) is said when enrolling, never the key itself', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Exposed' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const onArgv = spawnAgent(['--server', srv.url, '--key', key, '--name', 'argv'], await tempDir('ce-in-'));
    await onArgv.waitForOutput(/enrolled; identity saved/);
    expect(onArgv.output()).toContain('--key puts the provisioning key on the command line');
    expect(onArgv.output()).not.toContain(key);
    onArgv.kill('SIGTERM');
    await onArgv.exited;

    const dir = await tempDir('ce-in-');
    const keyFile = join(dir, 'provisioning.key');
    await writeFile(keyFile, `${key}\n`, { mode: 0o644 });
    await chmod(keyFile, 0o644);
    const fromFile = spawnAgent(
      ['--server', srv.url, '--key-file', keyFile, '--name', 'file'],
      await tempDir('ce-in-'),
    );
    await fromFile.waitForOutput(/enrolled; identity saved/);
    expect(fromFile.output()).toContain(
      `--key-file ${keyFile} is readable by other users (mode 0644): chmod 600 it`,
    );
    expect(fromFile.output()).not.toContain(key);
    fromFile.kill('SIGTERM');
    await fromFile.exited;
  });

  it.runIf(opensslAvailable())(
    'a --ca-file holding a private key, or no certificate, is refused before anything is sent (agent and admin CLI: exit 2, one line), and the key is never echoed',
    async () => {
      await using srv = await startTestServer();
      const group = await srv.admin.groups.create.mutate({ name: 'Trust' });
      const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const dir = await tempDir('ce-ca-');
      const ca = await createTestCa(dir);
      const caKey = await readFile(ca.keyFile, 'utf8');
      // The usual mistakes: the CA's key instead of its certificate, both in one file, something else.
      const bundle = join(dir, 'bundle.pem');
      await writeFile(bundle, `${ca.pem}${caKey}`);
      const notPem = join(dir, 'ca.txt');
      await writeFile(notPem, 'MIIB...\n');
      const cutShort = join(dir, 'short.pem');
      await writeFile(cutShort, '-----BEGIN CERTIFICATE-----\nMIIBxz\n-----END CERTIFICATE-----\n');
      const cases = [
        [
          ca.keyFile,
          `--ca-file: ${ca.keyFile} holds a private key, not only certificates: give the CA's certificate`,
        ],
        [bundle, `--ca-file: ${bundle} holds a private key, not only certificates`],
        [notPem, `--ca-file: ${notPem} holds no PEM certificate`],
        [cutShort, `--ca-file: ${cutShort}: certificate 1 of 1 cannot be read`],
      ] as const;
      for (const [file, said] of cases) {
        const agent = spawnAgent(
          ['--server', 'https://127.0.0.1:9443', '--key', key, '--ca-file', file],
          await tempDir('ce-in-'),
        );
        expect((await agent.exited).code, agent.output()).toBe(2);
        expect(agent.output()).toContain(said);
        expect(agent.output()).not.toContain('PRIVATE KEY');
        const cli = await serverCli(
          ['groups', 'list', '--server', 'https://127.0.0.1:9443', '--ca-file', file],
          {
            CONNECTOR_ADMIN_KEY: srv.adminKey,
          },
        );
        expect([cli.code, cli.stdout]).toEqual([2, '']);
        expect(cli.stderr).toContain(said);
        expect(cli.stderr.trim().split('\n')).toHaveLength(1);
        expect(cli.stderr).not.toContain('PRIVATE KEY');
      }
    },
  );

  it("a --server that answers but is not the enrollment server (a web page, a file server answering POST 501, another service's JSON) is final at once, exit 2 with the fix; a proxy's 502 page is retried; in a list, it is passed over", async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Elsewhere' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    /** A server on loopback that answers every request with `status`, `type` and `body`. */
    const answering = async (status: number, type: string, body: string) => {
      const server: Server = createServer((_req, res) =>
        res.writeHead(status, { 'content-type': type }).end(body),
      );
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return {
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        [Symbol.asyncDispose]: () => new Promise<void>((resolve) => server.close(() => resolve())),
      };
    };
    /** A web server on loopback that answers every request with `status` and an HTML page. */
    const webServer = (status: number) =>
      answering(status, 'text/html; charset=utf-8', '<!doctype html><p>hello</p>');
    await using site = await webServer(200);
    await using notFound = await webServer(404);
    await using badGateway = await webServer(502);
    for (const [web, status] of [
      [site, 200],
      [notFound, 404],
    ] as const) {
      const stateDir = await tempDir('ce-in-');
      const agent = spawnAgent(['--server', web.url, '--key', key], stateDir);
      expect((await agent.exited).code, agent.output()).toBe(2);
      expect(agent.output()).toContain(
        `${web.url} answered HTTP ${status} (text/html), which is not an answer of the enrollment server's API: check --server`,
      );
      expect(agent.output()).not.toMatch(/retrying|Unexpected token/);
      expect(JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')).state).toBe('misconfigured');
    }
    // The server itself under a path: its own "not found" is JSON, but no API answer (it was
    // retried for ever, "Unable to transform response from server").
    const pathDir = await tempDir('ce-in-');
    const underPath = spawnAgent(['--server', `${srv.url}/some/path`, '--key', key], pathDir);
    expect((await underPath.exited).code, underPath.output()).toBe(2);
    expect(underPath.output()).toContain(
      `${srv.url}/some/path answered HTTP 404 (application/json), which is not an answer of the enrollment server's API: check --server`,
    );
    expect(underPath.output()).not.toMatch(/retrying|Unable to transform/);
    // A file server (`python3 -m http.server` answers POST 501 in HTML) and another service's JSON
    // (tRPC's client said "Unable to transform response from server"): retried for ever, the first
    // as "the server too busy, or a proxy", the others as "is the server running".
    const fileServer = await answering(501, 'text/html;charset=utf-8', '<p>Unsupported method (POST)</p>');
    const otherApi = await answering(405, 'application/json', '{"detail":"Method Not Allowed"}');
    const otherOk = await answering(200, 'application/json', '{"ok":true}');
    try {
      for (const [web, status, type] of [
        [fileServer, 501, 'text/html'],
        [otherApi, 405, 'application/json'],
        [otherOk, 200, 'application/json'],
      ] as const) {
        const stateDir = await tempDir('ce-in-');
        const agent = spawnAgent(['--server', web.url, '--key', key], stateDir);
        // Bounded: before, it retried for ever.
        const exit = await settleWithin(agent.exited, 20_000);
        if (!exit) await agent.stop('SIGKILL');
        expect(exit?.code, agent.output()).toBe(2);
        expect(agent.output()).toContain(
          `${web.url} answered HTTP ${status} (${type}), which is not an answer of the enrollment server's API: check --server`,
        );
        expect(agent.output()).not.toMatch(/retrying|Unable to transform/);
        expect(JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')).state).toBe('misconfigured');
      }
    } finally {
      for (const web of [fileServer, otherApi, otherOk]) await web[Symbol.asyncDispose]();
    }
    const retried = spawnAgent(['--server', badGateway.url, '--key', key], await tempDir('ce-in-'));
    await retried.waitForOutput(
      /enrollment failed, retrying.*reason=answered HTTP 502 \(text\/html\) without the API's answer/,
    );
    retried.kill('SIGTERM');
    expect((await retried.exited).code).toBe(0);
    // Listed before the real server: passed over.
    const listed = spawnAgent(
      ['--server', `${site.url},${srv.url}`, '--key', key, '--name', 'listed'],
      await tempDir('ce-in-'),
    );
    await listed.waitForOutput(/enrolled; identity saved/);
    listed.kill('SIGTERM');
    await listed.exited;
    expect((await srv.admin.connectors.list.query({})).items.map((c) => c.name)).toEqual(['listed']);
  });
  it('a --server whose answer is larger than any of the API (said, or streamed without a length) is final at once, exit 2; it was read whole into memory', async () => {
    // A tRPC-shaped answer of 2 MiB: the size alone tells it from the enrollment server's (< 10 KiB).
    const huge = JSON.stringify({ result: { data: { pad: 'x'.repeat(2 * 1024 * 1024) } } });
    const servers: Server[] = [];
    const serve = async (handler: (res: import('node:http').ServerResponse) => void) => {
      const server = createServer((_req, res) => handler(res));
      servers.push(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    const withLength = await serve((res) =>
      res
        .writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(huge) })
        .end(huge),
    );
    const streamed = await serve((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // Chunked, 64 KiB at a time: no length to go by.
      for (let at = 0; at < huge.length; at += 65_536) res.write(huge.slice(at, at + 65_536));
      res.end();
    });
    try {
      for (const url of [withLength, streamed]) {
        const stateDir = await tempDir('ce-in-');
        const agent = spawnAgent(
          ['--server', url, '--key', `cpk_${'a'.repeat(12)}_${'b'.repeat(43)}`],
          stateDir,
        );
        const exit = await settleWithin(agent.exited, 20_000);
        if (!exit) await agent.stop('SIGKILL');
        expect(exit?.code, agent.output()).toBe(2);
        expect(agent.output()).toContain(
          `${url} answered HTTP 200 (application/json) with more than 256 KiB, which no answer of the enrollment server's API is: check --server`,
        );
      }
    } finally {
      for (const server of servers) server.close();
    }
  });
});
