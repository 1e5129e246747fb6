import { randomUUID } from 'node:crypto';
import { randomId } from '../../../server/services/secrets.js';
import { type ConnectorRecord, emptyData, type StoreData } from '../../../server/store/records.js';
import type { HostFacts } from '../../../shared/schemas.js';

/** Host facts like the agent reports, with a unique machine id. */
export function benchHostFacts(name: string, ips: string[] = ['127.0.0.1']): HostFacts {
  return {
    hostname: name,
    os: 'Debian GNU/Linux',
    platform: 'linux',
    release: '6.1.0-bench',
    arch: 'x64',
    cpus: 2,
    memoryBytes: 2 * 1024 ** 3,
    ips,
    machineId: randomUUID(),
  };
}

/** A connector record of realistic size (~1 KB), as an enrolled and connected agent leaves it. */
export function benchConnector(groupId: string, i: number): ConnectorRecord {
  const now = Date.now();
  return {
    id: randomId('con'),
    groupId,
    name: `bench-host-${i}`,
    status: 'enabled',
    enrolledAt: now + i,
    enrolledWithKeyId: 'pk_0123456789ab',
    keyThumbprint: 'x'.repeat(43),
    agentVersion: '0.1.0',
    host: benchHostFacts(`bench-host-${i}`, ['127.0.0.1', '10.0.0.12', 'fe80::1']),
    remoteAddress: '127.0.1.2',
    lastConnectedAt: now,
    lastSeenAt: now,
    identity: { issuedAt: now, expiresAt: now + 365 * 86_400_000, keyId: 'sk_0123456789abcdef' },
    revokedAt: null,
    revokeReason: null,
  };
}

/** A store's state holding `size` connectors of one group (the group record itself is not needed). */
export function seededStoreData(size: number): StoreData {
  const data = emptyData();
  for (let i = 0; i < size; i++) {
    const record = benchConnector('grp_0123456789abcdef', i);
    data.connectors[record.id] = record;
  }
  return data;
}
