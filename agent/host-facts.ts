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
  return {
    hostname: clip(os.hostname || hostname(), 253) || 'unknown',
    os: clip(os.distro || os.platform, 128),
    platform: clip(os.platform, 64),
    release: clip(os.release, 128),
    arch: clip(os.arch, 32),
    cpus: Math.max(0, Math.min(65_536, cpu.cores || 0)),
    memoryBytes: Math.max(0, Math.floor(mem.total || 0)),
    ips: [...new Set(ips)].slice(0, 64),
    machineId: clip(uuid.os || uuid.hardware, 128),
  };
}
