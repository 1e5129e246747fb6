import { connect } from 'node:tls';
import { describeNetworkError } from './network-errors.js';

/**
 * Whether the host and port of `server` complete a TLS handshake: probed only after a plain-HTTP
 * request there was cut without an answer, which is what a TLS port does with one. Nothing is sent
 * but a TLS hello, and the certificate is not judged (only whether the port speaks TLS).
 */
export function speaksTls(server: string, timeoutMs = 2_000): Promise<boolean> {
  const url = new URL(server);
  return new Promise((resolve) => {
    const socket = connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 80),
      rejectUnauthorized: false,
      ...(/^[\d.:[\]]+$/.test(url.hostname) ? {} : { servername: url.hostname }),
    });
    const done = (speaks: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(speaks);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * For an `http://` server whose answer never came because the connection was cut: if its port
 * speaks TLS, the one line that says so and what to use instead; else null.
 */
export async function tlsPortAsPlainHttp(error: unknown, server: string): Promise<string | null> {
  if (!server.startsWith('http:')) return null;
  if (!/UND_ERR_SOCKET|other side closed|ECONNRESET|socket hang up/.test(describeNetworkError(error)))
    return null;
  if (!(await speaksTls(server))) return null;
  const https = new URL(server);
  https.protocol = 'https:';
  return `${server} speaks TLS (https), not plain HTTP: use ${https.toString().replace(/\/$/, '')}`;
}
