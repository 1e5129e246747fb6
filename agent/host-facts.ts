import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import si from 'systeminformation';
import type { HostFacts } from '../shared/schemas.js';
import { escapeInvisible } from '../shared/text.js';

// Invisible characters are escaped as the server's schema does (`\u{200B}`), so that the facts the
// server stores are the ones sent and the session's host digest matches this side's.
const clip = (text: string | undefined, max: number) =>
  escapeInvisible((text ?? '').replace(/[\u0000-\u001f\u007f-\u009f]/g, '')).slice(0, max);

/** Facts about this host for the admin's inventory, bounded to what the server accepts. */
export async function collectHostFacts(): Promise<HostFacts> {
  const [os, cpu, mem, nets, uuid] = await Promise.all([
    si.osInfo(),
    si.cpu(),
    si.mem(),
    si.networkInterfaces().then((n) => (Array.isArray(n) ? n : [n])),
    si.uuid(),
  ]);
  const ips = nets
    .flatMap((n) => [n.ip4, n.ip6])
    .map((ip) => ip?.split('%')[0] ?? '')
    .filter((ip) => ip.length > 0);
  // systeminformation runs helper commands found on PATH; with a bare PATH (a hardened unit, a
  // container) it answers "unknown", so the files they read are read here instead.
  const release = known(os.distro) ? null : osRelease();
  return {
    hostname: clip(os.hostname || hostname(), 253) || 'unknown',
    os: clip(release?.NAME ?? (known(os.distro) ? os.distro : os.platform), 128),
    platform: clip(os.platform, 64),
    release: clip(release?.VERSION_ID ?? os.release, 128),
    arch: clip(os.arch, 32),
    cpus: Math.max(0, Math.min(65_536, cpu.cores || 0)),
    memoryBytes: Math.max(0, Math.floor(mem.total || 0)),
    ips: [...new Set(ips)].slice(0, 64),
    machineId: clip(known(uuid.os) ? uuid.os : (machineIdFile() ?? uuid.hardware), 128),
  };
}

const known = (value: string | undefined): value is string => !!value && value !== 'unknown';

/** `/etc/os-release` as key/value pairs (quotes removed); null where there is none. */
export function osRelease(text = readOr('/etc/os-release')): Record<string, string> | null {
  if (text === null) return null;
  const fields: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (match) fields[match[1]!] = match[2]!.replace(/^(["'])(.*)\1$/, '$2');
  }
  return fields.NAME ? fields : null;
}

function machineIdFile(): string | null {
  return readOr('/etc/machine-id')?.trim() || null;
}

function readOr(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
