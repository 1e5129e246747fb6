import { describe, expect, it } from 'vitest';
import type { AgentConfig } from './config.js';
import { enroll } from './enroll.js';
import { collectHostFacts } from './host-facts.js';
import { createTransport } from './transport.js';

describe('an enrollment that cannot reach its server', () => {
  it("says an expired server certificate as such, not 'is the server running?', and goes on retrying (the server's to renew)", async () => {
    const lines: string[] = [];
    const logger = {
      info: () => {},
      warn: (message: string) => lines.push(message),
      error: (message: string) => lines.push(message),
    };
    // What Node's TLS says of a certificate past its end, as fetch nests it.
    const expired = Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' });
    const transport = {
      ...createTransport(null),
      fetch: async () => {
        throw new TypeError('fetch failed', { cause: expired });
      },
    };
    const config: AgentConfig & { provisioningKey: string } = {
      servers: ['https://enroll.example.com'],
      provisioningKey: 'cpk_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      keyFileProblem: null,
      keyExposure: null,
      stateDir: '/nonexistent',
      name: null,
      caPem: null,
      allowInsecure: false,
      allowServerChange: false,
      logFormat: 'text',
    };
    const stop = new AbortController();
    const enrolling = enroll(config, transport, logger, stop.signal, await collectHostFacts());
    // The first failure is said at once; the retry waits.
    for (let i = 0; i < 100 && lines.length === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    stop.abort();
    expect(await enrolling).toBeNull();
    expect(lines[0]).toBe(
      "enrollment failed, retrying: the certificate of https://enroll.example.com is outside its validity period (expired, or not yet valid): it must be renewed on the server, or this host's clock set right",
    );
  });
});
