import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { clientAddressResolver, parseTrustedProxies } from '../server/http/client-address.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { hostFacts } from './helpers/agent-sim.js';
import { spawnTs } from './helpers/processes.js';
import { rawCall, startTestServer, type TestServer, tempDir } from './helpers/server.js';

/** A request as the resolver sees one: its TCP peer and its headers. */
const request = (peer: string, forwardedFor?: string) =>
  ({
    socket: { remoteAddress: peer },
    headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor },
  }) as unknown as IncomingMessage;

describe('clientAddressResolver (--trusted-proxies)', () => {
  it('without trusted proxies, the TCP peer, whatever X-Forwarded-For says', () => {
    const of = clientAddressResolver([]);
    expect(of(request('::ffff:192.0.2.1', '203.0.113.9'))).toBe('192.0.2.1');
  });

  it('from a peer that is not trusted, the peer: its X-Forwarded-For is ignored', () => {
    const of = clientAddressResolver(parseTrustedProxies('10.0.0.0/8'));
    expect(of(request('192.0.2.1', '203.0.113.9'))).toBe('192.0.2.1');
  });

  it('from a trusted peer, the rightmost address of X-Forwarded-For that is not trusted', () => {
    const of = clientAddressResolver(parseTrustedProxies('10.0.0.0/8, 127.0.0.1, fd00::/8'));
    // What the client wrote itself (the left) is not believed past the first untrusted hop.
    expect(of(request('127.0.0.1', '198.51.100.1, 203.0.113.9'))).toBe('203.0.113.9');
    expect(of(request('::ffff:127.0.0.1', '198.51.100.1, 203.0.113.9, 10.1.2.3'))).toBe('203.0.113.9');
    expect(of(request('fd00::5', '2001:db8::7'))).toBe('2001:db8::7');
    // No header, or only trusted hops: the farthest trusted hop.
    expect(of(request('127.0.0.1'))).toBe('127.0.0.1');
    expect(of(request('127.0.0.1', '10.0.0.9, 10.0.0.8'))).toBe('10.0.0.9');
    // Something that is not an address stops the walk at the last address believed.
    expect(of(request('127.0.0.1', 'evil, 10.0.0.8'))).toBe('10.0.0.8');
    expect(of(request('127.0.0.1', '203.0.113.9:4444'))).toBe('127.0.0.1');
  });

  it('refuses entries that are not addresses or CIDRs', () => {
    expect(parseTrustedProxies('')).toEqual([]);
    for (const bad of [
      '10.0.0.0/33',
      'fd00::/129',
      'proxy.example.com',
      '10.0.0.1/8/8',
      '10.0.0.1,',
      '10.0.0.0/x',
    ])
      expect(() => parseTrustedProxies(bad), bad).toThrow(/is not an address or CIDR/);
  });
});

describe('serve --trusted-proxies', () => {
  it('a bad entry stops the start with one line and exit 2 (flag or CONNECTOR_TRUSTED_PROXIES)', async () => {
    const dataDir = join(await tempDir(), 'never-created');
    const byFlag = spawnTs('server/main.ts', [
      'serve',
      '--data-dir',
      dataDir,
      '--trusted-proxies',
      '10.0.0.0/33',
    ]);
    const byEnv = spawnTs('server/main.ts', ['serve', '--data-dir', dataDir], {
      env: { ...process.env, CONNECTOR_TRUSTED_PROXIES: '127.0.0.1,proxy.example.com' },
    });
    // Each named where it was given.
    for (const [proc, where, entry] of [
      [byFlag, '--trusted-proxies', '10.0.0.0/33'],
      [byEnv, 'CONNECTOR_TRUSTED_PROXIES', 'proxy.example.com'],
    ] as const) {
      expect((await proc.exited).code).toBe(2);
      expect(proc.output().trim().split('\n')).toEqual([
        expect.stringContaining(`${where}: "${entry}" is not an address or CIDR`),
      ]);
    }
  });

  async function serverWith(trustedProxies: string[]): Promise<{ srv: TestServer; key: string }> {
    const srv = await startTestServer({
      config: { trustedProxies, rateLimits: { ...DEFAULT_RATE_LIMITS, enrollPerAddressPerMinute: 2 } },
    });
    const group = await srv.admin.groups.create.mutate({ name: 'Proxied' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    return { srv, key };
  }

  async function enrollFrom(srv: TestServer, key: string, forwardedFor: string) {
    const keyPair = await generateAgentKeyPair();
    const input = {
      provisioningKey: key,
      publicKey: keyPair.publicJwk,
      host: hostFacts(),
      agentVersion: 'test',
    };
    return rawCall(srv.url, 'agent.enroll', input, { headers: { 'x-forwarded-for': forwardedFor } });
  }

  const enrolledFrom = async (srv: TestServer) =>
    (await srv.admin.audit.list.query({ type: 'enrollment.succeeded' })).map((e) => e.remoteAddress);

  it('a spoofed X-Forwarded-For from a peer that is not trusted changes neither the limits nor the audit', async () => {
    const ctx = await serverWith(['10.0.0.0/8']);
    await using _ = ctx.srv;
    const outcomes = [];
    for (const spoofed of ['203.0.113.1', '203.0.113.2', '203.0.113.3'])
      outcomes.push(await enrollFrom(ctx.srv, ctx.key, spoofed));
    expect(outcomes.map((o) => o.reason ?? 'ok')).toEqual(['ok', 'ok', 'RATE_LIMITED']);
    expect(await enrolledFrom(ctx.srv)).toEqual(['127.0.0.1', '127.0.0.1']);
  });

  it('behind a trusted proxy, each client is limited and audited under its own address', async () => {
    const ctx = await serverWith(['127.0.0.1']);
    await using _ = ctx.srv;
    const outcomes = [];
    for (const client of ['203.0.113.1', '203.0.113.2', '203.0.113.3'])
      outcomes.push(await enrollFrom(ctx.srv, ctx.key, `198.51.100.66, ${client}`));
    expect(outcomes.map((o) => o.reason ?? 'ok')).toEqual(['ok', 'ok', 'ok']);
    expect((await enrolledFrom(ctx.srv)).sort()).toEqual(['203.0.113.1', '203.0.113.2', '203.0.113.3']);
    // One client is still one address: its third enrollment in the minute is refused.
    await enrollFrom(ctx.srv, ctx.key, '203.0.113.1');
    expect((await enrollFrom(ctx.srv, ctx.key, '203.0.113.1')).reason).toBe('RATE_LIMITED');
  });
});
