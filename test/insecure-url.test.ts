import { execFileSync } from 'node:child_process';
import dns from 'node:dns';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkServerUrl, parseAgentConfig, UsageError } from '../agent/config.js';
import { type Proc, repoRoot, spawnProcess } from './helpers/processes.js';
import { tempDir } from './helpers/server.js';

const PLAIN_TO_THE_NETWORK = [
  'http://enroll.example.com',
  'ws://enroll.example.com:7420',
  'http://10.1.2.3:7420',
  'http://evil.localhost:7420',
  'http://[2001:db8::1]:7420',
  'http://[::ffff:127.0.0.1]:7420',
];

/** Every way the agent could start talking to the network, watched. */
function watchNetwork() {
  return [
    vi.spyOn(dns, 'lookup'),
    vi.spyOn(dns.promises, 'lookup'),
    vi.spyOn(dns, 'resolve'),
    vi.spyOn(net, 'connect'),
    vi.spyOn(net, 'createConnection'),
    vi.spyOn(tls, 'connect'),
    vi.spyOn(http, 'request'),
    vi.spyOn(https, 'request'),
    vi.spyOn(globalThis, 'fetch'),
  ];
}

afterEach(() => {
  vi.restoreAllMocks();
});

/** A key of the right shape (the agent sends no other), which no server made. */
const WELL_FORMED_KEY = `cpk_${'a'.repeat(12)}_${'b'.repeat(43)}`;

describe('plain http:// and ws:// are refused for any host but loopback (in process)', () => {
  it('parseAgentConfig refuses each with a UsageError before any lookup or connection', async () => {
    const spies = watchNetwork();
    for (const server of PLAIN_TO_THE_NETWORK) {
      const error = await parseAgentConfig({ server: [server], key: 'cpk_x_y' }, {}).catch((e: unknown) => e);
      expect(error, server).toBeInstanceOf(UsageError);
      expect((error as Error).message, server).toMatch(/refusing plain (http|ws):\/\/ .*--allow-insecure/);
    }
    // --allow-insecure lets the same URLs through; parsing still touches no network.
    for (const server of PLAIN_TO_THE_NETWORK) {
      const config = await parseAgentConfig({ server: [server], key: 'cpk_x_y', allowInsecure: true }, {});
      expect(config.servers[0]).toMatch(/^http:\/\//);
    }
    for (const spy of spies) expect(spy).not.toHaveBeenCalled();
    // The watch is not blind: a lookup (of localhost, from /etc/hosts) is seen.
    await new Promise((resolve) => dns.lookup('localhost', resolve));
    expect(spies[0]).toHaveBeenCalledTimes(1);
  });

  it('loopback and https need no flag; ws/wss are normalised to http/https', () => {
    expect(checkServerUrl('http://127.0.0.1:7420', false)).toBe('http://127.0.0.1:7420');
    expect(checkServerUrl('http://127.8.9.10:7420/', false)).toBe('http://127.8.9.10:7420');
    expect(checkServerUrl('ws://localhost:7420', false)).toBe('http://localhost:7420');
    expect(checkServerUrl('http://[::1]:7420', false)).toBe('http://[::1]:7420');
    expect(checkServerUrl('wss://enroll.example.com', false)).toBe('https://enroll.example.com');
    expect(() => checkServerUrl('ftp://enroll.example.com', true)).toThrow(UsageError);
    expect(() => checkServerUrl('not a url', true)).toThrow(UsageError);
    // A prefix a proxy serves it under is kept; the API's own path is the agent's to add.
    expect(checkServerUrl('https://example.com/connector/', false)).toBe('https://example.com/connector');
    expect(() => checkServerUrl('http://127.0.0.1:7420/trpc', false)).toThrow(
      "--server http://127.0.0.1:7420/trpc: give the server's base URL, without /trpc (the agent adds /trpc itself): --server http://127.0.0.1:7420",
    );
    expect(() => checkServerUrl('https://example.com/connector/trpc/agent.enroll', false)).toThrow(
      '--server https://example.com/connector',
    );
  });
});

/** A network namespace of the test's own: only a loopback device, and it is down. Nothing leaves. */
function netnsAvailable(): boolean {
  try {
    execFileSync('unshare', ['--net', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The agent CLI, from source, inside a fresh network namespace. */
function agentInNetns(args: string[], stateDir: string): Proc {
  return spawnProcess('unshare', [
    '--net',
    process.execPath,
    '--import',
    'tsx',
    join(repoRoot, 'agent/main.ts'),
    ...args,
    '--state-dir',
    stateDir,
  ]);
}

describe.skipIf(!netnsAvailable())('the agent CLI in an isolated network namespace (unshare --net)', () => {
  it('exits 2 for plain URLs to other hosts, creating nothing; --allow-insecure proceeds, cannot connect, retries, and stops cleanly on SIGTERM', async () => {
    const root = await tempDir('ce-netns-');
    const refused = ['http://enroll.example.com', 'ws://enroll.example.com:7420', 'http://10.1.2.3:7420'].map(
      (server, i) => ({ server, stateDir: join(root, `refused-${i}`) }),
    );
    const allowed = ['http://enroll.example.com', 'http://10.1.2.3:7420'].map((server, i) => ({
      server,
      stateDir: join(root, `allowed-${i}`),
    }));
    const refusedProcs = refused.map(({ server, stateDir }) =>
      agentInNetns(['--server', server, '--key', WELL_FORMED_KEY], stateDir),
    );
    const allowedProcs = allowed.map(({ server, stateDir }) =>
      agentInNetns(['--server', server, '--key', WELL_FORMED_KEY, '--allow-insecure'], stateDir),
    );

    for (const [i, proc] of refusedProcs.entries()) {
      expect((await proc.exited).code, proc.output()).toBe(2);
      expect(proc.output()).toContain('refusing plain');
      expect(proc.output()).not.toContain('enrolling');
      expect(existsSync(refused[i]!.stateDir)).toBe(false);
    }
    for (const proc of allowedProcs) {
      // Two failed attempts show it retries rather than giving up (and it never reached anything).
      await proc.waitForOutput(
        /((enrollment failed, retrying|still cannot enroll)[^\n]*\n[\s\S]*){2}/,
        20_000,
      );
      expect(proc.output()).toMatch(/ENETUNREACH|EAI_AGAIN|ENOTFOUND|ECONNREFUSED|EHOSTUNREACH/);
      proc.kill('SIGTERM');
      expect((await proc.exited).code, proc.output()).toBe(0);
    }
    await rm(root, { recursive: true, force: true });
  });
});
