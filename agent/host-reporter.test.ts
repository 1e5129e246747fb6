import { describe, expect, it } from 'vitest';
import { hostFactsDigest } from '../shared/host-facts.js';
import type { HostFacts } from '../shared/schemas.js';
import { HostReporter } from './host-reporter.js';

const facts = (hostname: string): HostFacts => ({
  hostname,
  os: 'Debian GNU/Linux',
  platform: 'linux',
  release: '6.1.0',
  arch: 'x64',
  cpus: 2,
  memoryBytes: 2 * 1024 ** 3,
  ips: ['127.0.0.1'],
  machineId: 'machine-1',
});

describe('HostReporter', () => {
  it('sends changed facts once, even when a report takes longer than the refresh interval', async () => {
    const sent: string[] = [];
    const reporter = new HostReporter({
      // A slow server: each report answers after 300 ms, six ticks of 50 ms.
      report: async (host) => {
        sent.push(host.hostname);
        await new Promise((resolve) => setTimeout(resolve, 300));
      },
      logger: { info: () => {}, warn: () => {} },
      hostFacts: facts('before'),
      intervalMs: 50,
      collect: async () => facts('after'),
      finished: () => false,
    });
    reporter.sessionStarted(hostFactsDigest(facts('before')));
    try {
      await new Promise((resolve) => setTimeout(resolve, 800));
    } finally {
      reporter.stop();
    }
    // Each tick that overlapped the first report sent the same facts again.
    expect(sent).toEqual(['after']);
  });
});
