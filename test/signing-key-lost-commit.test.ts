import { afterEach, describe, expect, it } from 'vitest';
import { replicasWithCutter, type startReplicas } from './helpers/replicas.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type Replica = Awaited<ReturnType<typeof startReplicas>>[number];

/** The COMMIT of a signing-key write (the sealed document's UPDATE), not of a store change. */
const DOCUMENT_WRITE = 'UPDATE server_documents';

/**
 * A rotation or retirement whose COMMIT's answer is lost (the connection drops as PostgreSQL
 * commits). It used to be answered "nothing was changed" whatever became of it: a retirement that
 * had landed (its identities no longer accepted anywhere) was reported as not done, and was never
 * audited. Now the replica asks the database, as for a store commit: the document's body (sealed
 * with a fresh nonce) is the proof.
 */
describe('a signing-key change whose COMMIT answer is lost', () => {
  const setup = () => replicasWithCutter(cleanups);

  const kids = async (server: Replica) =>
    (await server.admin.signingKeys.list.query({})).map((k) => `${k.kid}:${k.state}`).sort();

  const rotations = async (server: Replica) =>
    (await server.admin.audit.list.query({ type: 'signing_key.rotated' })).filter(
      (e) => e.outcome === 'success',
    );

  it('committed: asked, answered as done, audited once', async () => {
    const { a, b, cutter } = await setup();
    cutter.arm({ when: 'after', mark: DOCUMENT_WRITE });
    const { key } = await a.admin.signingKeys.rotate.mutate({ activateInSeconds: 600 });
    expect(cutter.cut).toBe(1);
    expect(await kids(a)).toContain(`${key.kid}:published`);
    await expect.poll(() => kids(b), { timeout: 10_000 }).toEqual(await kids(a));
    const events = await rotations(a);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ keyId: key.kid });
    expect(events[0]?.details).not.toHaveProperty('savedAfterAnswer');
  });

  it('rolled back (the COMMIT never arrived): nothing was changed, and a retry goes through', async () => {
    const { a, b, cutter } = await setup();
    const before = await kids(a);
    cutter.arm({ when: 'before', mark: DOCUMENT_WRITE });
    await expect(a.admin.signingKeys.rotate.mutate({ activateInSeconds: 600 })).rejects.toMatchObject({
      data: { reason: 'STORE_UNAVAILABLE' },
      message: expect.stringContaining('nothing was changed'),
    });
    expect(cutter.cut).toBe(1);
    expect(await kids(a)).toEqual(before);
    expect(await kids(b)).toEqual(before);
    expect(await rotations(a)).toHaveLength(0);
    const { key } = await a.admin.signingKeys.rotate.mutate({ activateInSeconds: 600 });
    await expect.poll(() => kids(b), { timeout: 10_000 }).toContain(`${key.kid}:published`);
  });

  it('unknown (the database cannot be asked): "it may have been saved", then the keys and the audit event once it can', async () => {
    const { a, b, cutter } = await setup();
    const before = await kids(b);
    // Longer than the replica asks (3 s): it has to call the outcome unknown.
    cutter.arm({ when: 'after', mark: DOCUMENT_WRITE, refuseNewForMs: 5000 });
    await expect(a.admin.signingKeys.rotate.mutate({ activateInSeconds: 600 })).rejects.toMatchObject({
      data: { reason: 'STORE_UNAVAILABLE', mayBeSaved: true },
      message: expect.stringContaining('it may have been saved'),
    });
    expect(cutter.cut).toBe(1);
    // It was saved: the other replica has a new key waiting, and A comes to hold it too.
    await expect.poll(async () => (await kids(b)).length, { timeout: 10_000 }).toBe(before.length + 1);
    await expect.poll(() => kids(a), { timeout: 20_000 }).toEqual(await kids(b));
    // Audited once it could ask, marked as saved after its answer.
    await expect.poll(async () => (await rotations(a)).length, { timeout: 15_000 }).toBe(1);
    const [event] = await rotations(a);
    expect(event?.details).toMatchObject({ savedAfterAnswer: true });
    expect(`${event?.keyId}:published`).toBe((await kids(b)).find((k) => !before.includes(k)));
  });
});
