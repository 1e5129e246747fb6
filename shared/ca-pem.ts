import { X509Certificate } from 'node:crypto';

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Why the text of a `--ca-file` cannot serve as the CA to trust, or null when it can: one or more
 * PEM certificates and nothing secret. A private key given by mistake (the CA's, or the server's)
 * was taken and the server then reported as untrusted, which sent the operator looking at the
 * server; and a key left where a CA file is expected is a secret spread to every host.
 */
export function caPemProblem(pem: string, file: string): string | null {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem))
    return `--ca-file: ${file} holds a private key, not only certificates: give the CA's certificate (the PEM block "BEGIN CERTIFICATE"), and remove the key from this file (a key copied here is a secret spread to this host)`;
  const blocks = pem.match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0)
    return `--ca-file: ${file} holds no PEM certificate (a "-----BEGIN CERTIFICATE-----" block): give the CA's certificate in PEM (openssl x509 -in CA.der -inform der -out ca.pem converts a DER one)`;
  for (const [index, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch {
      return `--ca-file: ${file}: certificate ${index + 1} of ${blocks.length} cannot be read (damaged or cut short): give the CA's certificate in PEM`;
    }
  }
  return null;
}
