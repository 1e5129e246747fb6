import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollSim } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { type ServerProc, spawnServer, spawnTs } from './helpers/processes.js';

/** Runs `npm run -s server -- ARGS` the way the README says, minus npm's own start-up. */
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => serverCli(args, env);

describe('server CLI (admin commands against a running server)', () => {
  let dataDir: string;
  let server: ServerProc;
  const common = () => ['--server', server.url, '--data-dir', dataDir];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'ce-cli-'));
    server = await spawnServer(dataDir);
  });
  afterAll(async () => {
    server.kill('SIGTERM');
    await server.exited;
    await rm(dataDir, { recursive: true, force: true });
  });

  it('creates a group and prints a usable key alone on stdout', async () => {
    const created = await cli(['groups', 'create', 'Demo', ...common()]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain('name:');
    // The next step is printed to be copied as is: with the server and data dir this one was given.
    const next = /Next: copy its key with `npm run -s server -- (.*)`/.exec(created.stdout)?.[1];
    expect(next).toBe(`groups key Demo --server ${server.url} --data-dir ${dataDir}`);
    const key = await cli(['groups', 'key', 'Demo', ...common()]);
    expect(key.code).toBe(0);
    expect(key.stdout.trim()).toMatch(/^cpk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    expect(key.stderr).toContain('Connector Provisioning Key - Demo');
    const enrolled = await enrollSim(server.url, key.stdout.trim());
    expect(enrolled.ok).toBe(true);
  });

  it('the commands printed by groups create and next-steps run as printed in a shell, whatever the name', async () => {
    /** The words a POSIX shell makes of `command` (quotes, $, backslashes as it reads them). */
    const shellWords = (command: string) =>
      execFileSync('sh', ['-c', `printf '%s\\0' ${command}`], { encoding: 'utf8' })
        .split('\0')
        .slice(0, -1);
    const names = ['Cost $HOME', "Bob's", '-staging', 'a"b`c\\d'];
    for (const name of names) {
      const created = await cli(['groups', 'create', ...common(), '--', name]);
      expect(created.code, created.stderr).toBe(0);
      const next = /Next: copy its key with `npm run -s server -- (.*)`/.exec(created.stdout)?.[1];
      const key = await cli(shellWords(next!));
      expect(key.code, `${next}: ${key.stderr}`).toBe(0);
      expect(key.stderr).toContain(`Connector Provisioning Key - ${name}`);
    }
    const steps = await cli(['groups', 'next-steps', ...common()]);
    for (const name of names) {
      const row = steps.stdout.split('\n').find((line) => line.startsWith(`│ ${name} `));
      const how = /Copy the key \(npm run -s server -- (.*)\) and run:/.exec(row ?? '')?.[1];
      const key = await cli(shellWords(how!));
      expect(key.code, `${how}: ${key.stderr}`).toBe(0);
      expect(key.stderr).toContain(`Connector Provisioning Key - ${name}`);
    }
    // The API's hint (next-steps --json, the console) is the same command, quoted the same way.
    const json = await cli(['groups', 'next-steps', '--json', ...common()]);
    const hints = JSON.parse(json.stdout) as { name: string; hint: string }[];
    for (const name of names) {
      const hint = hints.find((s) => s.name === name)?.hint ?? '';
      const how = /Copy the key \(npm run -s server -- (.*)\) and run:/.exec(hint)?.[1];
      const key = await cli([...shellWords(how!), ...common()]);
      expect(key.code, `${how}: ${key.stderr}`).toBe(0);
      expect(key.stderr).toContain(`Connector Provisioning Key - ${name}`);
    }
  });

  it('prints JSON with --json and tables otherwise', async () => {
    await cli(['groups', 'create', 'Json', ...common()]);
    const json = await cli(['groups', 'list', '--json', ...common()]);
    const groups = JSON.parse(json.stdout) as Array<{ name: string }>;
    expect(groups.map((g) => g.name)).toContain('Json');
    const table = await cli(['groups', 'list', ...common()]);
    expect(table.stdout).toMatch(/NAME\s+│?\s*STATUS/);
    const keys = await cli(['api-keys', 'list', ...common()]);
    expect(keys.stdout).toContain('Connector Provisioning Key - Json');
  });

  it('groups list and get say whether the current key still enrolls: a used-up one names the fix', async () => {
    await cli(['groups', 'create', 'Once', ...common()]);
    const regenerated = await cli(['groups', 'regenerate-key', 'Once', '--max-uses', '1', ...common()]);
    expect(regenerated.code, regenerated.stderr).toBe(0);
    const row = async () =>
      (await cli(['groups', 'list', ...common()])).stdout.split('\n').find((l) => l.includes(' Once '));
    expect(await row()).toMatch(/expires in 14 days, 0\/1 used/);
    expect((await enrollSim(server.url, regenerated.stdout.trim())).ok).toBe(true);
    expect(await row()).toMatch(/used up, 1\/1 used: regenerate-key/);
    const shown = await cli(['groups', 'get', 'Once', ...common()]);
    expect(shown.stdout).toMatch(/^key: +used up, 1\/1 used: regenerate-key$/m);
    // A disabled group's current key enrolls no host: the line says so.
    await cli(['groups', 'regenerate-key', 'Once', ...common()]);
    await cli(['groups', 'disable', 'Once', ...common()]);
    const disabled = await cli(['groups', 'get', 'Once', ...common()]);
    expect(disabled.stdout).toMatch(
      /^key: +expires in 14 days, 0\/1 used \(enrolls no host: group disabled\)$/m,
    );
  });

  it('explains API errors with the reason and a fix, exit 1', async () => {
    await cli(['groups', 'create', 'Dup', ...common()]);
    const dup = await cli(['groups', 'create', 'Dup', ...common()]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain('NAME_TAKEN');
    expect(dup.stderr).toContain('fix:');
    const missing = await cli(['groups', 'get', 'Nope', ...common()]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('GROUP_NOT_FOUND');
  });

  it('refuses a wrong admin key and says why', async () => {
    const r = await cli(['groups', 'list', ...common()], {
      CONNECTOR_ADMIN_KEY: 'cak_aaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('ADMIN_KEY_INVALID');
  });

  it('uses exit code 2 for usage errors and prints help', async () => {
    expect((await cli(['groups', 'frobnicate'])).code).toBe(2);
    const help = await cli(['groups', 'create', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--description');
    const serveHelp = await cli(['serve', '--help']);
    expect(serveHelp.stdout).toContain('--key-ttl');
    expect(serveHelp.stdout).toContain('CONNECTOR_KEY_TTL');
  });

  it('admin help names the env var of each flag that has one, and the range of each number', async () => {
    /** The help of `flag` in `help`, its wrapped lines joined. */
    const optionHelp = (help: string, flag: string) =>
      new RegExp(`^\\s+${flag}\\b(.*(?:\\n\\s{8,}[^-\\s].*)*)`, 'm').exec(help)?.[1]?.replace(/\s+/g, ' ') ??
      '';
    const list = (await cli(['connectors', 'list', '--help'])).stdout;
    expect(optionHelp(list, '--server')).toContain('env CONNECTOR_SERVER');
    expect(optionHelp(list, '--data-dir')).toContain('env CONNECTOR_DATA_DIR');
    expect(optionHelp(list, '--ca-file')).toContain('env CONNECTOR_CA_FILE');
    expect(optionHelp(list, '--limit')).toContain('1 to 1000');
    expect(optionHelp(list, '--timeout')).toContain('1 to 3600');
    const audit = (await cli(['audit', '--help'])).stdout;
    expect(optionHelp(audit, '--limit')).toContain('1 to 10000');
  });

  it('before any server has run (no data dir), says to start one, in one line (exit 2)', async () => {
    const fresh = join(dataDir, 'never-started');
    const r = await cli(['groups', 'list', '--server', 'http://127.0.0.1:2', '--data-dir', fresh]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([
      `error: no admin API key: ${fresh}/admin.key does not exist (no server has run with the data dir ${fresh}: start one first, npm start); fix: pass --admin-key-file FILE, set CONNECTOR_ADMIN_KEY, or --data-dir the server's data dir`,
    ]);
  });

  it('says when the server cannot be reached', async () => {
    const r = await cli(['groups', 'list', '--server', 'http://127.0.0.1:2', '--data-dir', dataDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('cannot reach the server');
  });

  it('an answer that is not the API: the server under a path (its JSON "not found"), or a web page, is exit 2 saying what --server must be (it said "cannot reach the server")', async () => {
    const underPath = await cli([
      'groups',
      'list',
      '--server',
      `${server.url}/some/path`,
      '--data-dir',
      dataDir,
    ]);
    expect(underPath.code).toBe(2);
    expect(underPath.stderr).toContain(
      `${server.url}/some/path answered HTTP 404 (application/json), which is not an answer of the enrollment server's API: --server is the server's base URL`,
    );
    expect(underPath.stderr).not.toMatch(/Unable to transform|cannot reach/);
    const page = createHttpServer((req, res) =>
      req.url?.includes('busy')
        ? res.writeHead(503, { 'content-type': 'text/plain' }).end('too many connections')
        : res.writeHead(200, { 'content-type': 'text/html' }).end('<p>hi</p>'),
    );
    await new Promise<void>((resolve) => page.listen(0, '127.0.0.1', resolve));
    try {
      const pageUrl = `http://127.0.0.1:${(page.address() as { port: number }).port}`;
      const site = await cli(['groups', 'list', '--server', pageUrl, '--data-dir', dataDir]);
      expect(site.code).toBe(2);
      expect(site.stderr).toContain(`${pageUrl} answered HTTP 200 (text/html), which is not an answer`);
      // A busy server's (or proxy's) own 503 is not a wrong --server: exit 1, try again.
      const busy = await cli(['groups', 'list', '--server', `${pageUrl}/busy`, '--data-dir', dataDir]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toContain(
        "answered HTTP 503 (text/plain) without the API's answer: the server is too busy",
      );
      expect(busy.stderr).not.toContain('--server is the server');
    } finally {
      await new Promise((resolve) => page.close(resolve));
    }
  });

  it('a server that takes the call and never answers: one line within --timeout, saying a change may be saved; a cut connection says so too, without an https hint for a plain-http port', async () => {
    const held = new Set<Socket>();
    // Reads the request and never answers (a frozen process, a black hole).
    const silent = createServer((socket) => {
      held.add(socket);
      socket.on('error', () => {});
    });
    // Answers a request by cutting its connection (a server killed as it worked).
    const cutting = createServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.destroy());
    });
    /** An admin command to `url`, bounded to 2 s a call. */
    const bounded = (url: string, ...args: string[]) =>
      cli([...args, '--server', url, '--data-dir', dataDir, '--timeout', '2']);
    const urlOf = async (server: Server) => {
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    };
    try {
      const silentUrl = await urlOf(silent);
      const started = performance.now();
      const read = await bounded(silentUrl, 'groups', 'list');
      const took = performance.now() - started;
      expect(read.code).toBe(1);
      expect(read.stderr.trim()).toBe(
        `error: the server at ${silentUrl} did not answer within 2 s (--timeout): it may be stalled or waiting on its storage; see its /healthz and its log`,
      );
      // The bound, not the 300 s of undici's header timeout (the CLI's own start-up is most of it).
      expect(took).toBeLessThan(30_000);
      const change = await bounded(silentUrl, 'groups', 'create', 'Frozen');
      expect(change.code).toBe(1);
      expect(change.stderr).toContain(
        'did not answer within 2 s (--timeout): it may be stalled or waiting on its storage; see its /healthz and its log; the change may have been saved or not: check (list or get) before trying again',
      );

      // Headers, then a body that never ends: the bound holds past the headers too.
      const partial = createServer((socket) => {
        held.add(socket);
        socket.on('error', () => {});
        socket.once('data', () =>
          socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{'),
        );
      });
      try {
        const partialUrl = await urlOf(partial);
        const stalled = await bounded(partialUrl, 'groups', 'list');
        expect(stalled.code).toBe(1);
        expect(stalled.stderr).toContain(
          `error: the server at ${partialUrl} did not answer within 2 s (--timeout)`,
        );
      } finally {
        for (const socket of held) socket.destroy();
        await new Promise((resolve) => partial.close(resolve));
      }

      const cutUrl = await urlOf(cutting);
      const cut = await cli(['groups', 'create', 'Cut', '--server', cutUrl, '--data-dir', dataDir]);
      expect(cut.code).toBe(1);
      expect(cut.stderr.trim().split('\n')).toHaveLength(1);
      expect(cut.stderr).toContain(
        `the connection to the server at ${cutUrl} was cut without an HTTP answer`,
      );
      expect(cut.stderr).toContain(
        'the change may have been saved or not: check (list or get) before trying again',
      );
      expect(cut.stderr).not.toContain('https://');
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
      await new Promise((resolve) => cutting.close(resolve));
    }
  });

  it('takes several servers, comma-separated, as the agent does (replicas): the first that answers; none answering is one line naming each', async () => {
    const dead = 'http://127.0.0.1:2';
    // CONNECTOR_SERVER is shared with the agent, which reads it as a list.
    const listed = await cli(['groups', 'list', '--data-dir', dataDir, '--json'], {
      CONNECTOR_SERVER: `${dead},${server.url}`,
    });
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual(expect.any(Array));
    const none = await cli([
      'groups',
      'list',
      '--data-dir',
      dataDir,
      '--server',
      `${dead},http://127.0.0.1:7`,
    ]);
    expect(none.code).toBe(1);
    expect(none.stderr.trim().split('\n')).toEqual([
      expect.stringMatching(
        /^error: none of the servers --server names answered \(http:\/\/127\.0\.0\.1:2: .*; http:\/\/127\.0\.0\.1:7: .*\)/,
      ),
    ]);
    // A value that is no URL is blamed on where it came from.
    const bad = await cli(['groups', 'list', '--data-dir', dataDir], {
      CONNECTOR_SERVER: 'enroll.example.com',
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('CONNECTOR_SERVER enroll.example.com: not an http:// or https:// URL');
  });
});

describe('serve', () => {
  it('refuses to start on a data file it cannot parse, naming the file, and leaves it alone', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ce-bad-'));
    const { writeFile, readFile } = await import('node:fs/promises');
    await writeFile(join(dataDir, 'store.json'), '{"schemaVersion":1,"gro');
    const proc = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir, '--port', '0']);
    const { code } = await proc.exited;
    expect(code).toBe(1);
    expect(proc.output()).toContain(join(dataDir, 'store.json'));
    expect(proc.output()).toContain('not valid JSON');
    expect(await readFile(join(dataDir, 'store.json'), 'utf8')).toBe('{"schemaVersion":1,"gro');
    await rm(dataDir, { recursive: true, force: true });
  });

  it('rejects bad flags with exit 2: durations, ports', async () => {
    for (const args of [
      ['--key-ttl', 'soon'],
      ['--key-ttl', '0s'],
      ['--port', '99999'],
    ]) {
      const proc = spawnTs('server/main.ts', [
        'serve',
        '--data-dir',
        join(tmpdir(), 'never-created'),
        ...args,
      ]);
      const { code } = await proc.exited;
      expect(code, args.join(' ')).toBe(2);
    }
  });

  it('serves /healthz, /metrics and the JWKS; stops cleanly on SIGTERM', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ce-http-'));
    const server = await spawnServer(dataDir);
    expect(await (await fetch(`${server.url}/healthz`)).json()).toMatchObject({ ok: true });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toContain('connector_enrollments_total');
    expect(metrics).toContain('connector_connectors{state="connected"}');
    const jwks = (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as {
      keys: Array<{ kid: string }>;
    };
    expect(jwks.keys[0]?.kid).toBeTypeOf('string');
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    server.kill('SIGTERM');
    expect((await server.exited).code).toBe(0);
    await rm(dataDir, { recursive: true, force: true });
  });
});
