import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAgentConfig, readCaFile, resolveStateDir, UsageError } from './config.js';

describe('resolveStateDir', () => {
  it('makes a relative --state-dir or CONNECTOR_STATE_DIR absolute, so a run elsewhere finds the same dir', () => {
    expect(resolveStateDir('state', {}, 1000)).toBe(`${process.cwd()}/state`);
    expect(resolveStateDir(undefined, { CONNECTOR_STATE_DIR: 'st' }, 1000)).toBe(`${process.cwd()}/st`);
  });

  it('root: /var/lib/connector-agent; others: XDG_STATE_HOME when absolute, else ~/.local/state', () => {
    expect(resolveStateDir(undefined, { HOME: '/root' }, 0)).toBe('/var/lib/connector-agent');
    expect(resolveStateDir(undefined, { XDG_STATE_HOME: '/srv/state', HOME: '/home/a' }, 1000)).toBe(
      '/srv/state/connector-agent',
    );
    // The XDG spec: a relative value is ignored.
    expect(resolveStateDir(undefined, { XDG_STATE_HOME: 'rel', HOME: '/home/a' }, 1000)).toBe(
      '/home/a/.local/state/connector-agent',
    );
  });

  it('refuses a home that is not a path instead of a dir relative to wherever it runs', () => {
    expect(() => resolveStateDir(undefined, { HOME: '' }, 1000)).toThrow(UsageError);
    expect(() => resolveStateDir(undefined, { HOME: '' }, 1000)).toThrow(
      'no state dir: HOME is empty; pass --state-dir DIR or set CONNECTOR_STATE_DIR',
    );
    expect(() => resolveStateDir(undefined, { HOME: 'home' }, 1000)).toThrow(
      /HOME is "home", not an absolute path/,
    );
  });
});

describe('the key flags mixed up', () => {
  const server = ['http://127.0.0.1:7420'];
  it('--key with a file path: not sent as a key; says to use --key-file', async () => {
    const config = await parseAgentConfig({ server, key: '/tmp/demo.key', stateDir: '/tmp/s' }, {});
    expect(config.provisioningKey).toBeNull();
    expect(config.keyFileProblem).toBe(
      '--key takes the key itself (cpk_…), and /tmp/demo.key looks like a file: use --key-file /tmp/demo.key',
    );
  });

  it('--key-file with the key itself: not read as a path, and never echoed', async () => {
    const key = 'cpk_abcdefghijkl_0123456789012345678901234567890123456789012';
    const config = await parseAgentConfig({ server, keyFile: key, stateDir: '/tmp/s' }, {});
    expect(config.provisioningKey).toBeNull();
    expect(config.keyFileProblem).toMatch(
      /^--key-file takes a file, and the value given is a provisioning key itself/,
    );
    expect(config.keyFileProblem).not.toContain(key.slice(4));
  });
});

describe('a --server on a port fetch refuses', () => {
  it('is a usage error at once, not an enrollment retried for ever ("bad port")', async () => {
    const refused = parseAgentConfig({ server: ['http://127.0.0.1:6000'], stateDir: '/tmp/s' }, {});
    await expect(refused).rejects.toBeInstanceOf(UsageError);
    await expect(refused).rejects.toThrow(
      /^--server http:\/\/127\.0\.0\.1:6000: port 6000 is one that fetch and browsers refuse to connect to/,
    );
    // The scheme's own port counts too, and a good port passes.
    expect(
      (await parseAgentConfig({ server: ['https://enroll.example.com'], stateDir: '/tmp/s' }, {})).servers,
    ).toEqual(['https://enroll.example.com']);
  });
});

describe('readCaFile', () => {
  it('reads --ca-file, else CONNECTOR_CA_FILE (as the admin CLI does), naming whichever it could not read', async () => {
    expect(await readCaFile(undefined, {})).toBeNull();
    await expect(readCaFile(undefined, { CONNECTOR_CA_FILE: '/nonexistent/ca.pem' })).rejects.toThrow(
      'CONNECTOR_CA_FILE: cannot read /nonexistent/ca.pem (ENOENT)',
    );
    await expect(
      readCaFile('/nonexistent/flag.pem', { CONNECTOR_CA_FILE: '/nonexistent/ca.pem' }),
    ).rejects.toThrow('--ca-file: cannot read /nonexistent/flag.pem (ENOENT)');
    const dir = await mkdtemp(join(tmpdir(), 'ce-ca-'));
    try {
      await writeFile(join(dir, 'key.pem'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
      // Read from the environment, and checked as the flag's file is.
      await expect(readCaFile(undefined, { CONNECTOR_CA_FILE: join(dir, 'key.pem') })).rejects.toThrow(
        UsageError,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('--name', () => {
  it('too long: one line that says the bound, not the schema library words', async () => {
    await expect(
      parseAgentConfig({ server: ['http://127.0.0.1:7420'], name: 'n'.repeat(65), stateDir: '/tmp/x' }, {}),
    ).rejects.toThrow('--name: must be at most 64 characters');
  });
});
