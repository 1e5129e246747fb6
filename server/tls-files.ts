/**
 * The server's own certificate and key (--tls-cert, --tls-key), read and checked before anything
 * else starts, with errors that name the file and the fix.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';

/** The --tls-cert / --tls-key pair cannot be used; the message names the file, the problem and the fix. */
export class TlsConfigError extends Error {}

/** What to do about a TLS file the server cannot read, by the error's code. */
const UNREADABLE: Record<string, string> = {
  ENOENT: 'no such file: check the path',
  EACCES: "permission denied: let the server's user read it (the key mode 0600, owned by that user)",
  EISDIR: 'a directory: name the PEM file in it',
};

/**
 * Which file of the pair is wrong, and how, in the operator's words: OpenSSL's own complaint
 * ("PEM routines::no start line") names neither the file nor the fix. Null when each file is fine
 * on its own (the pair's problem is then said by the caller).
 */
function unusableFile(certFile: string, cert: Buffer, keyFile: string, key: Buffer): string | null {
  try {
    new X509Certificate(cert);
  } catch (error) {
    return `--tls-cert ${certFile}: not a PEM certificate ("-----BEGIN CERTIFICATE-----", then any intermediate ones) (${(error as Error).message})`;
  }
  try {
    createPrivateKey(key);
  } catch (error) {
    return `--tls-key ${keyFile}: not an unencrypted PEM private key ("-----BEGIN PRIVATE KEY-----"; an encrypted key is decrypted by openssl pkey -in ${keyFile} -out <new file>) (${(error as Error).message})`;
  }
  return null;
}

/** Reads and checks the certificate and key before anything else starts, so a bad pair touches nothing. */
export async function loadTlsPair(certFile: string, keyFile: string): Promise<{ cert: Buffer; key: Buffer }> {
  const read = (file: string, flag: string) =>
    readFile(file).catch((error: NodeJS.ErrnoException) => {
      const code = error.code ?? error.message;
      const fix = UNREADABLE[code];
      throw new TlsConfigError(`${flag} ${file}: cannot read it (${code}${fix ? `: ${fix}` : ''})`);
    });
  const [cert, key] = await Promise.all([read(certFile, '--tls-cert'), read(keyFile, '--tls-key')]);
  const wrongFile = unusableFile(certFile, cert, keyFile, key);
  if (wrongFile) throw new TlsConfigError(wrongFile);
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    const both = `--tls-cert ${certFile} / --tls-key ${keyFile}`;
    throw new TlsConfigError(
      /key values mismatch/i.test((error as Error).message)
        ? `${both}: the key is not the certificate's (use the key the certificate was issued for, from the same issue or renewal)`
        : `${both}: not a usable certificate and matching key (${(error as Error).message})`,
    );
  }
  return { cert, key };
}
