import { describe, expect, it } from 'vitest';
import { deepFreeze } from '../record-tables.js';
import { emptyData } from '../records.js';
import { CommittedVersions } from './committed-versions.js';
import { applyRemoteOps, sharingUnchanged } from './remote-changes.js';

const held = deepFreeze({
  id: 'con_1',
  name: 'edge-1',
  lastConnectedAt: null as number | null,
  host: { hostname: 'edge-1', ips: ['10.0.0.1', 'fd00::1'], cpus: 4 },
  identity: { issuedAt: 1, expiresAt: 2, keyId: 'k1' },
});

/** The same record as another replica's op carries it: parsed afresh, one field changed. */
const parsedWith = (fields: object) => JSON.parse(JSON.stringify({ ...held, ...fields }));

describe('an op applied over the record held shares what did not change', () => {
  it('unchanged fields (strings, nested objects, arrays) are the held values; changed ones the op’s', () => {
    const op = parsedWith({ lastConnectedAt: 1234 });
    const shared = sharingUnchanged(held, op) as typeof held;
    expect(shared).toEqual(op);
    expect(shared.host).toBe(held.host);
    expect(shared.identity).toBe(held.identity);
    expect(shared.lastConnectedAt).toBe(1234);
    expect(Object.keys(shared)).toEqual(Object.keys(op));
  });

  it('a nested change takes the op’s value for that field whole; nothing of it is the held one', () => {
    const op = parsedWith({ host: { ...held.host, ips: ['10.0.0.1'] } });
    const shared = sharingUnchanged(held, op) as typeof held;
    expect(shared.host).toBe(op.host);
    expect(shared.host.ips).toEqual(['10.0.0.1']);
    expect(shared.identity).toBe(held.identity);
  });

  it('values equal as JSON only: an added or removed key, a longer array, an array for an object differ', () => {
    for (const host of [
      { ...held.host, extra: 1 },
      { hostname: 'edge-1', ips: held.host.ips },
      { ...held.host, ips: [...held.host.ips, '10.0.0.2'] },
      [held.host],
    ]) {
      const shared = sharingUnchanged(held, parsedWith({ host })) as { host: unknown };
      expect(shared.host).toEqual(host);
      expect(shared.host).not.toBe(held.host);
    }
  });

  it('a field the op no longer has is gone; a record not held is the op itself', () => {
    const { name: _, ...withoutName } = parsedWith({});
    expect(Object.hasOwn(sharingUnchanged(held, withoutName), 'name')).toBe(false);
    const fresh = parsedWith({});
    expect(sharingUnchanged(undefined, fresh)).toBe(fresh);
  });

  it('applyRemoteOps holds the shared record, frozen, and reports the held one as before', () => {
    const data = emptyData();
    (data.connectors as Record<string, unknown>)[held.id] = held;
    const versions = new CommittedVersions();
    versions.committed({ section: 'connectors', id: 'con_1', body: held, version: 3 }, false);
    const changes = applyRemoteOps(data, versions, [
      { section: 'connectors', id: 'con_1', body: parsedWith({ lastConnectedAt: 99 }), version: 4 },
    ]);
    const now = (data.connectors as Record<string, typeof held>)[held.id]!;
    expect(now.lastConnectedAt).toBe(99);
    expect(now.host).toBe(held.host);
    expect(Object.isFrozen(now)).toBe(true);
    expect(changes).toEqual([{ section: 'connectors', id: 'con_1', before: held, after: now }]);
    expect(versions.of('connectors', 'con_1')).toBe(4);
  });
});
