import { execFile, execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Whether the openssl CLI is on PATH (Debian: package openssl). */
export function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface TestCa {
  certFile: string;
  keyFile: string;
  pem: string;
}

export interface TestCert {
  certFile: string;
  keyFile: string;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A throwaway CA (EC P-256, valid one day) made by the openssl CLI in `dir`. */
export async function createTestCa(dir: string, name = 'ca'): Promise<TestCa> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  await run('openssl', [
    'req',
    '-x509',
    ...EC,
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-subj',
    `/CN=Throwaway test CA ${name}`,
    '-days',
    '1',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { certFile, keyFile, pem: await readFile(certFile, 'utf8') };
}

/** A server certificate signed by `ca` for exactly the given DNS names and IP addresses. */
export async function issueServerCert(
  ca: TestCa,
  dir: string,
  name: string,
  subjectAltNames: { dns?: string[]; ips?: string[] },
): Promise<TestCert> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  const csrFile = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  const sans = [
    ...(subjectAltNames.dns ?? []).map((d) => `DNS:${d}`),
    ...(subjectAltNames.ips ?? []).map((ip) => `IP:${ip}`),
  ];
  await writeFile(
    extFile,
    `subjectAltName=${sans.join(',')}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`,
  );
  await run('openssl', ['req', ...EC, '-keyout', keyFile, '-out', csrFile, '-subj', `/CN=${name}`]);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    csrFile,
    '-CA',
    ca.certFile,
    '-CAkey',
    ca.keyFile,
    '-CAcreateserial',
    '-out',
    certFile,
    '-days',
    '1',
    '-extfile',
    extFile,
  ]);
  return { certFile, keyFile };
}
