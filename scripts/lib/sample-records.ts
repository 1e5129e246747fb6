import type { ConnectorRecord } from '../../server/store/records.js';

/**
 * A stored connector as an enrollment writes it, with placeholder values of realistic size: the
 * benchmark's commits and the store contract tests write the same record.
 */
export function sampleConnectorRecord(id: string): ConnectorRecord {
  return {
    id,
    groupId: 'g',
    name: id,
    status: 'enabled',
    enrolledAt: 0,
    enrolledWithKeyId: 'k',
    keyThumbprint: 't',
    agentVersion: '1.0.0',
    host: {
      hostname: id,
      os: 'Linux',
      platform: 'linux',
      release: '6',
      arch: 'x64',
      cpus: 2,
      memoryBytes: 1,
      ips: ['10.0.0.1'],
      machineId: 'm',
    },
    remoteAddress: '127.0.0.1',
    lastConnectedAt: null,
    lastSeenAt: null,
    identity: { issuedAt: 0, expiresAt: 1, keyId: 'k' },
    revokedAt: null,
    revokeReason: null,
  } as ConnectorRecord;
}
