import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { composeServer } from '../server/app.js';
import { ManualClock } from '../server/clock.js';
import type { Context } from '../server/context.js';
import { appRouter } from '../server/router.js';
import { ISSUER } from '../server/server-config.js';
import { MemoryAuditLog } from '../server/services/audit.js';
import { IdentityAuthority } from '../server/services/identity.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { SecretBox } from '../server/services/secrets.js';
import { MemoryStore } from '../server/store/memory-store.js';
import { createCallerFactory } from '../server/trpc.js';
import { DAY_MS } from '../shared/durations.js';
import { hostFacts } from './helpers/agent-sim.js';

/** The whole API over in-memory capabilities: no sockets, no files. */
async function inMemoryApi() {
  const clock = new ManualClock();
  const store = new MemoryStore();
  const audit = new MemoryAuditLog(clock);
  const identity = await IdentityAuthority.inMemory({ issuer: ISSUER, clock });
  const { services, hub } = composeServer(
    {
      store,
      audit,
      clock,
      identity,
      secretBox: new SecretBox(randomBytes(32)),
      logger: pino({ level: 'silent' }),
    },
    {
      keyTtlMs: 14 * DAY_MS,
      identityTtlMs: 365 * DAY_MS,
      pendingTtlMs: 7 * DAY_MS,
      rateLimits: DEFAULT_RATE_LIMITS,
    },
  );
  const created = await services.apiKeys.create(
    { name: 'test', scope: 'admin' },
    { actor: { kind: 'system' }, remoteAddress: null },
  );
  const context = (bearerToken: string | null): Context => ({
    services,
    hub,
    remoteAddress: '192.0.2.1',
    bearerToken,
    agent: null,
    agentRefusal: 'IDENTITY_INVALID',
  });
  const caller = createCallerFactory(appRouter);
  return {
    clock,
    store,
    audit,
    services,
    admin: caller(context(created.key)),
    anonymous: caller(context(null)),
  };
}

describe('procedures over in-memory capabilities (createCaller)', () => {
  it('runs the key lifecycle and enrollment without sockets or files', async () => {
    const { admin, anonymous, clock, audit } = await inMemoryApi();
    const group = await admin.groups.create({ name: 'Fast' });
    const key = await admin.provisioningKeys.get({ groupId: group.id });
    const { publicJwk } = await generateAgentKeyPair();
    const enrolled = await anonymous.agent.enroll({
      provisioningKey: key.key!,
      publicKey: publicJwk,
      host: hostFacts(),
      agentVersion: 't',
    });
    expect(enrolled.groupId).toBe(group.id);
    clock.advance(14 * DAY_MS);
    // A new host past the key's expiry is refused; a retry of the enrollment made before it is not.
    const another = (await generateAgentKeyPair()).publicJwk;
    await expect(
      anonymous.agent.enroll({
        provisioningKey: key.key!,
        publicKey: another,
        host: hostFacts(),
        agentVersion: 't',
      }),
    ).rejects.toMatchObject({ code: 'UNAUTHORIZED', cause: { reason: 'KEY_EXPIRED' } });
    const retried = await anonymous.agent.enroll({
      provisioningKey: key.key!,
      publicKey: publicJwk,
      host: hostFacts(),
      agentVersion: 't',
    });
    expect(retried.connectorId).toBe(enrolled.connectorId);
    expect(audit.events.map((e) => e.type)).toContain('enrollment.refused');
  });

  it('maps domain errors to tRPC codes in one place', async () => {
    const { admin, anonymous } = await inMemoryApi();
    await expect(admin.groups.get({ groupId: 'grp_missing' })).rejects.toMatchObject({
      code: 'NOT_FOUND',
      cause: { reason: 'GROUP_NOT_FOUND' },
    });
    await expect(anonymous.groups.list()).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      cause: { reason: 'ADMIN_KEY_INVALID' },
    });
    await expect(anonymous.agent.report({ host: hostFacts() })).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      cause: { reason: 'IDENTITY_INVALID' },
    });
  });

  it('fails a mutation with STORE_UNAVAILABLE and changes nothing when the store cannot write', async () => {
    const { admin, store } = await inMemoryApi();
    await admin.groups.create({ name: 'Before' });
    store.failWrites = true;
    await expect(admin.groups.create({ name: 'After' })).rejects.toMatchObject({
      code: 'INTERNAL_SERVER_ERROR',
      cause: { reason: 'STORE_UNAVAILABLE' },
    });
    store.failWrites = false;
    expect((await admin.groups.list()).map((g) => g.name)).toEqual(['Before']);
  });
});
