import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { composeServer } from '../server/app.js';
import { ManualClock } from '../server/clock.js';
import { ISSUER } from '../server/server-config.js';
import { MemoryAuditLog } from '../server/services/audit.js';
import type { DomainEvent } from '../server/services/events.js';
import { IdentityAuthority } from '../server/services/identity.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import {
  domainEventsOf,
  type GroupMembers,
  type RecordChange,
  revocationConfirmationsOf,
} from '../server/services/remote-changes.js';
import { SecretBox } from '../server/services/secrets.js';
import { MemoryStore } from '../server/store/memory-store.js';
import type { ConnectorRecord, GroupRecord } from '../server/store/records.js';
import type { Store } from '../server/store/store.js';
import { DAY_MS } from '../shared/durations.js';
import { hostFacts } from './helpers/agent-sim.js';

const system = { actor: { kind: 'system' as const }, remoteAddress: null };
const noMembers: GroupMembers = { connectorIdsOf: () => [] };

function group(fields: Partial<GroupRecord> = {}): GroupRecord {
  return {
    id: 'grp_1',
    name: 'g',
    description: '',
    status: 'enabled',
    createdAt: 1,
    currentKeyId: 'key_1',
    ...fields,
  };
}

function connector(fields: Partial<ConnectorRecord> = {}): ConnectorRecord {
  return {
    id: 'con_1',
    groupId: 'grp_1',
    name: 'c',
    status: 'enabled',
    enrolledAt: 1,
    enrolledWithKeyId: 'key_1',
    keyThumbprint: 'jkt',
    agentVersion: 't',
    host: hostFacts(),
    remoteAddress: '192.0.2.1',
    lastConnectedAt: null,
    lastSeenAt: null,
    identity: { issuedAt: 1, expiresAt: 2, keyId: 'k' },
    revokedAt: null,
    revokeReason: null,
    ...fields,
  };
}

function change(
  section: RecordChange['section'],
  before?: { id: string },
  after?: { id: string },
): RecordChange {
  const id = before?.id ?? after?.id;
  if (!id) throw new TypeError('a change needs a record');
  return { section, id, before, after };
}

describe('domain events of another replica’s record changes', () => {
  it('connector disabled, enabled, revoked (with its reason), deleted', () => {
    const on = connector();
    const off = connector({ status: 'disabled' });
    const revoked = connector({ status: 'revoked', revokedAt: 5, revokeReason: 'lost laptop' });
    expect(domainEventsOf([change('connectors', on, off)], noMembers)).toEqual([
      { type: 'connector.status', connectorId: 'con_1', status: 'disabled' },
    ]);
    expect(domainEventsOf([change('connectors', off, on)], noMembers)).toEqual([
      { type: 'connector.status', connectorId: 'con_1', status: 'enabled' },
    ]);
    expect(domainEventsOf([change('connectors', off, revoked)], noMembers)).toEqual([
      { type: 'connector.revoked', connectorId: 'con_1', reason: 'lost laptop' },
    ]);
    expect(domainEventsOf([change('connectors', revoked, undefined)], noMembers)).toEqual([
      { type: 'connector.deleted', connectorId: 'con_1' },
    ]);
  });

  it('gives nothing for changes no session is told of', () => {
    const on = connector();
    const changes = [
      change('connectors', undefined, on), // enrolled
      change('connectors', on, connector({ lastSeenAt: 9, lastConnectedAt: 8 })),
      change(
        'connectors',
        connector({ status: 'revoked' }),
        connector({ status: 'revoked', revocationConfirmedAt: 3 }),
      ),
      change('groups', undefined, group()), // created
      change('groups', group(), group({ currentKeyId: 'key_2', name: 'renamed' })),
      change('provisioningKeys', { id: 'key_1' }, undefined),
      change('apiKeys', undefined, { id: 'api_1' }),
    ];
    expect(domainEventsOf(changes, noMembers)).toEqual([]);
  });

  it('a revocation another replica recorded as confirmed, the first time only', () => {
    const revoked = connector({ status: 'revoked' });
    const confirmed = connector({
      status: 'revoked',
      revocationConfirmedAt: 3,
      revocationConfirmedFrom: '192.0.2.7',
    });
    const changes = [
      change('connectors', revoked, confirmed),
      change('connectors', confirmed, connector({ ...confirmed, lastSeenAt: 9 })), // confirmed before
      change('connectors', connector({ id: 'con_2' }), connector({ id: 'con_2', lastSeenAt: 9 })),
    ];
    expect(revocationConfirmationsOf(changes)).toEqual([
      {
        connectorId: 'con_1',
        termination: {
          state: 'confirmed',
          confirmedAt: new Date(3).toISOString(),
          confirmedFrom: '192.0.2.7',
        },
      },
    ]);
  });

  it('group status carries the group’s connectors as they are now', () => {
    const members: GroupMembers = { connectorIdsOf: (id) => (id === 'grp_1' ? ['con_1', 'con_2'] : []) };
    expect(domainEventsOf([change('groups', group(), group({ status: 'disabled' }))], members)).toEqual([
      { type: 'group.status', groupId: 'grp_1', status: 'disabled', connectorIds: ['con_1', 'con_2'] },
    ]);
  });

  it('a group deleted with its connectors is one group.deleted naming them; others deleted alongside stay apart', () => {
    const changes = [
      change('connectors', connector({ id: 'con_1' }), undefined),
      change('connectors', connector({ id: 'con_2', status: 'revoked' }), undefined),
      change('connectors', connector({ id: 'con_9', groupId: 'grp_other' }), undefined),
      change('provisioningKeys', { id: 'key_1' }, undefined),
      change('groups', group(), undefined),
    ];
    expect(domainEventsOf(changes, noMembers)).toEqual([
      { type: 'connector.deleted', connectorId: 'con_9' },
      { type: 'group.deleted', groupId: 'grp_1', connectorIds: ['con_1', 'con_2'] },
    ]);
  });
});

/** The services over a MemoryStore, and every event they announce as committed. */
async function services() {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const audit = new MemoryAuditLog(clock);
  const identity = await IdentityAuthority.inMemory({ issuer: ISSUER, clock });
  const policy = { keyTtlMs: 14 * DAY_MS, identityTtlMs: 365 * DAY_MS, pendingTtlMs: 7 * DAY_MS };
  const { services } = composeServer(
    {
      store,
      audit,
      clock,
      identity,
      secretBox: new SecretBox(randomBytes(32)),
      logger: pino({ level: 'silent' }),
    },
    { ...policy, rateLimits: DEFAULT_RATE_LIMITS },
  );
  const announced: DomainEvent[] = [];
  services.events.on('committed', (event) => announced.push(event));
  const enroll = async (groupId: string) => {
    const key = services.provisioningKeys.get(groupId);
    const { publicJwk } = await generateAgentKeyPair();
    const enrolled = await services.enrollment.enroll(
      { provisioningKey: key.key!, publicKey: publicJwk, host: hostFacts(), agentVersion: 't' },
      '192.0.2.1',
    );
    return enrolled.connectorId;
  };
  return { services, store, clock, announced, enroll };
}

/** What changed in the store between two snapshots, as the change feed hands it over. */
function storeChanges(store: Store, act: () => Promise<unknown>): Promise<RecordChange[]> {
  const records = () => {
    const snapshot = store.snapshot();
    const all = new Map<string, { section: RecordChange['section']; record: { id: string } }>();
    for (const [section, list] of snapshot.sections)
      for (const record of list as { id: string }[]) all.set(`${section}/${record.id}`, { section, record });
    snapshot.release();
    return all;
  };
  const before = records();
  return act().then(() => {
    const after = records();
    const changes: RecordChange[] = [];
    for (const key of new Set([...before.keys(), ...after.keys()])) {
      const b = before.get(key);
      const a = after.get(key);
      // Records are replaced, never changed in place: the same object is the same record.
      if (b?.record === a?.record) continue;
      const { section, record } = (a ?? b)!;
      changes.push({ section, id: record.id, before: b?.record, after: a?.record });
    }
    return changes;
  });
}

describe('the same events the services announce, for the changes they make', () => {
  it('connector and group status, revoke, delete, group delete, pending sweep', async () => {
    const { services: s, store, clock, announced, enroll } = await services();
    const members: GroupMembers = {
      connectorIdsOf: (groupId) =>
        store.read((view) =>
          view
            .list('connectors')
            .filter((c) => c.groupId === groupId)
            .map((c) => c.id),
        ),
    };
    const g = await s.groups.create({ name: 'Fleet' }, system);
    const [a, b, c] = [await enroll(g.id), await enroll(g.id), await enroll(g.id)];
    const other = await s.groups.create({ name: 'Other' }, system);
    const stale = await enroll(other.id);
    const actions: Array<() => Promise<unknown>> = [
      () => s.connectors.setStatus(a, 'disabled', system),
      () => s.connectors.setStatus(a, 'enabled', system),
      () => s.groups.setStatus(g.id, 'disabled', system),
      () => s.groups.setStatus(g.id, 'enabled', system),
      () => s.connectors.revoke(b, 'stolen', system),
      () => s.connectors.delete(c, system),
      () => s.groups.delete(g.id, { force: true }, system),
      () => {
        clock.advance(8 * DAY_MS);
        return s.connectors.sweepPending();
      },
    ];
    for (const act of actions) {
      announced.length = 0;
      const changes = await storeChanges(store, act);
      expect(announced.length).toBeGreaterThan(0);
      expect(domainEventsOf(changes, members)).toEqual(announced);
    }
    expect(store.read((view) => view.get('connectors', stale))).toBeUndefined();
  });
});
