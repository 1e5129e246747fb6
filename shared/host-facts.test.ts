import { describe, expect, it } from 'vitest';
import { hostFactsDigest } from './host-facts.js';
import type { HostFacts } from './schemas.js';

const facts: HostFacts = {
  hostname: 'web-1',
  os: 'Debian GNU/Linux',
  platform: 'linux',
  release: '6.1.0',
  arch: 'x64',
  cpus: 4,
  memoryBytes: 8 * 1024 ** 3,
  ips: ['10.0.0.5', 'fe80::1'],
  machineId: 'b3c0a1f2',
};

describe('hostFactsDigest', () => {
  it('is a base64url SHA-256 that does not depend on the order of the keys', () => {
    const reversed = Object.fromEntries(Object.entries(facts).reverse()) as HostFacts;
    expect(Object.keys(reversed)[0]).toBe('machineId');
    expect(hostFactsDigest(reversed)).toBe(hostFactsDigest(facts));
    expect(hostFactsDigest(facts)).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('changes when any one field changes', () => {
    const changed: { [K in keyof HostFacts]: HostFacts[K] } = {
      hostname: 'web-2',
      os: 'Ubuntu',
      platform: 'darwin',
      release: '6.1.1',
      arch: 'arm64',
      cpus: 5,
      memoryBytes: 8 * 1024 ** 3 + 1,
      ips: ['fe80::1', '10.0.0.5'],
      machineId: 'b3c0a1f3',
    };
    const digests = new Set([hostFactsDigest(facts)]);
    for (const field of Object.keys(changed) as (keyof HostFacts)[])
      digests.add(hostFactsDigest({ ...facts, [field]: changed[field] }));
    expect(digests.size).toBe(1 + Object.keys(facts).length);
  });

  it('keeps values apart that only a naive concatenation would merge', () => {
    expect(hostFactsDigest({ ...facts, hostname: 'ab', os: 'c' })).not.toBe(
      hostFactsDigest({ ...facts, hostname: 'a', os: 'bc' }),
    );
  });
});
