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

describe('a payload no replica sent (any role that may connect can NOTIFY)', () => {
  const replicaId = '6f1c2a9e-0d4b-4c55-9a43-2f0e8d7b1c3a';

  it('reads the three kinds as the replicas write them', () => {
    expect(decodeNotification(`c ${replicaId}\ncon_a 7 127.0.0.1\ncon_b 8 ::ffff:192.0.2.1`)).toEqual({
      kind: 'claimed',
      replicaId,
      claims: [
        { connectorId: 'con_a', claim: 7, remoteAddress: '127.0.0.1' },
        { connectorId: 'con_b', claim: 8, remoteAddress: '::ffff:192.0.2.1' },
      ],
    });
    expect(decodeNotification(`r ${replicaId}\ncon_a 7`)).toEqual({
      kind: 'released',
      replicaId,
      releases: [{ connectorId: 'con_a', claim: 7 }],
    });
    expect(decodeNotification(`d ${replicaId}\ncon_a 1796000000000 -`)).toMatchObject({
      kind: 'deletionConfirmed',
    });
  });

  it.each([
    ['a claim number that is not one', `c ${replicaId}\ncon_a notanumber 127.0.0.1`],
    ['a claim number past what a double holds', `c ${replicaId}\ncon_a 90071992547409930 127.0.0.1`],
    ['a zero or negative claim', `c ${replicaId}\ncon_a 0 127.0.0.1`],
    ['an address with control characters', `c ${replicaId}\ncon_a 9000000000000 \x1b[31m6.6.6.6\x1b[0m`],
    ['a claim without an address', `c ${replicaId}\ncon_a 7`],
    ['a field too many', `c ${replicaId}\ncon_a 7 127.0.0.1 extra`],
    ['a good entry beside a bad one', `c ${replicaId}\ncon_a 7 127.0.0.1\ncon_b x 127.0.0.1`],
    ['a deletion time that is no time', `d evil\ncon_x notanumber -`],
    ['a deletion without its address field', `d ${replicaId}\ncon_x 1796000000000`],
    ['a release with an address', `r ${replicaId}\ncon_a 7 127.0.0.1`],
    ['a header alone', `c ${replicaId}`],
    ['a replica id with a space', `c a b\ncon_a 7 127.0.0.1`],
    ['a connector id out of shape', `r ${replicaId}\ncon/../x 7`],
    ['an empty payload', ''],
  ])('%s: dropped whole', (_what, payload) => {
    expect(decodeNotification(payload)).toBeNull();
  });
});
