import { createHash } from 'node:crypto';
import type { HostFacts } from './schemas.js';

// Every field of HostFacts, in digest order. `satisfies` makes a field added to the schema but not
// listed here a compile error, rather than a change the digest cannot see.
const DIGEST_FIELDS = Object.keys({
  hostname: true,
  os: true,
  platform: true,
  release: true,
  arch: true,
  cpus: true,
  memoryBytes: true,
  ips: true,
  machineId: true,
} satisfies Record<keyof HostFacts, true>) as (keyof HostFacts)[];

/**
 * SHA-256 (base64url) of host facts, fields in a fixed order. The server names the digest of the
 * facts it holds in the session's `ready` event, so an agent reports only facts that changed and a
 * reconnect storm costs no extra call per agent.
 */
export function hostFactsDigest(host: HostFacts): string {
  const canonical = JSON.stringify(DIGEST_FIELDS.map((field) => host[field]));
  return createHash('sha256').update(canonical).digest('base64url');
}
