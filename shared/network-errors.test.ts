import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { freePort } from '../test/helpers/processes.js';
import { describeNetworkError, tlsMisconfiguration } from './network-errors.js';

/** What a real fetch to `url` fails with. */
async function failureOf(url: string): Promise<unknown> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(5000) });
  } catch (error) {
    return error;
  }
  throw new Error(`${url} answered`);
}

describe('describeNetworkError', () => {
  it('says what is under "fetch failed": the code, or a port fetch refuses to use', async () => {
    // A port just let go of: nothing listens there, so the connection is refused.
    const port = await freePort();
    expect(describeNetworkError(await failureOf(`http://127.0.0.1:${port}/`))).toBe(
      `connect ECONNREFUSED 127.0.0.1:${port}`,
    );
    // Port 6000 is on fetch's list of blocked ports: refused before any connection.
    expect(describeNetworkError(await failureOf('http://127.0.0.1:6000/'))).toBe(
      'bad port: fetch refuses to connect to this port (one of the ports browsers block, such as 6000 or 10080); serve on another port',
    );
  });
});

describe('tlsMisconfiguration', () => {
  /** Node's own verdict on `host` against a certificate with these names. */
  const mismatch = (host: string, cert: Partial<PeerCertificate>) => {
    const error = checkServerIdentity(host, cert as PeerCertificate);
    if (!error) throw new Error('no mismatch');
    return error;
  };

  it("names what the certificate is for, in each of Node's wordings, and the --server that would match", () => {
    expect(
      tlsMisconfiguration(
        mismatch('localhost', {
          subject: {} as never,
          subjectaltname: 'DNS:enroll.example.com, DNS:*.example.com',
        }),
        'https://localhost:7524',
      ),
    ).toBe(
      'TLS: the certificate of https://localhost:7524 is not for localhost but for enroll.example.com; use --server https://enroll.example.com:7524 (a --server host name the certificate names).',
    );
    // A certificate with an IP address and no DNS name: Node compares the host name with its CN.
    expect(
      tlsMisconfiguration(
        mismatch('localhost', {
          subject: { CN: '127.0.0.1' } as never,
          subjectaltname: 'IP Address:127.0.0.1',
        }),
        'https://localhost:7524',
      ),
    ).toBe(
      'TLS: the certificate of https://localhost:7524 is not for localhost but for 127.0.0.1; use --server https://127.0.0.1:7524 (a --server host name the certificate names).',
    );
  });

  it('a --server IP address against a certificate of DNS names: the names come from the certificate (Node lists only its IP addresses)', () => {
    const error = mismatch('127.0.0.1', {
      subject: {} as never,
      subjectaltname: 'DNS:enroll.example.com, email:ops@example.com, DNS:*.example.com',
    });
    expect(error.message).not.toContain('enroll.example.com');
    expect(tlsMisconfiguration(error, 'https://127.0.0.1:7524')).toBe(
      'TLS: the certificate of https://127.0.0.1:7524 is not for 127.0.0.1 but for enroll.example.com; use --server https://enroll.example.com:7524 (a --server host name the certificate names).',
    );
    // An IPv6 address it names goes into the URL in brackets.
    expect(
      tlsMisconfiguration(
        mismatch('localhost', { subject: {} as never, subjectaltname: 'IP Address:FD00:0:0:0:0:0:0:1' }),
        'https://localhost:7524',
      ),
    ).toMatch(/but for FD00:0:0:0:0:0:0:1; use --server https:\/\/\[fd00::1\]:7524 /);
  });
});
