import { describe, expect, it } from 'vitest';
import { randomId } from '../services/secrets.js';
import {
  CONFIRMATIONS_PER_NOTIFICATION,
  decodeNotification,
  deletionConfirmationPayloads,
  senderOf,
} from './postgres-cluster-sql.js';

/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
const NOTIFY_PAYLOAD_LIMIT = 8000;

describe('deletion confirmations as notifications', () => {
  const replicaId = '6f1c2a9e-0d4b-4c55-9a43-2f0e8d7b1c3a';
  const longest = 'ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255';
  const confirmations = Array.from({ length: CONFIRMATIONS_PER_NOTIFICATION * 2 + 1 }, (_, i) => ({
    connectorId: randomId('con'),
    confirmedAt: 1_796_000_000_000 + i,
    confirmedFrom: i % 3 === 0 ? null : longest,
  }));

  it('read back as they were sent, a payload under the limit each, however long the addresses', () => {
    const payloads = deletionConfirmationPayloads(replicaId, confirmations);
    expect(payloads).toHaveLength(3);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(NOTIFY_PAYLOAD_LIMIT);
    const decoded = payloads.map((p) => decodeNotification(p));
    expect(decoded.every((d) => d?.kind === 'deletionConfirmed' && d.replicaId === replicaId)).toBe(true);
    expect(decoded.flatMap((d) => (d?.kind === 'deletionConfirmed' ? d.confirmations : []))).toEqual(
      confirmations,
    );
  });

  it('an unknown kind is ignored, not misread', () => {
    expect(decodeNotification(`x ${replicaId}\ncon_a 1 -`)).toBeNull();
  });

  it('the sender is read from the first line alone, for every kind and a payload of one line', () => {
    const [payload] = deletionConfirmationPayloads(replicaId, confirmations);
    expect(senderOf(payload!)).toBe(replicaId);
    expect(senderOf(`c ${replicaId}\ncon_a 7 127.0.0.1`)).toBe(replicaId);
    expect(senderOf(`r ${replicaId}`)).toBe(replicaId);
    expect(senderOf('c')).toBeNull();
    expect(senderOf('')).toBeNull();
  });
});
