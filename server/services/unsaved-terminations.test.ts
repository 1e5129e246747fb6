import { describe, expect, it } from 'vitest';
import { DomainError } from '../../shared/errors.js';
import { ChangeUnconfirmed, type LateOutcome } from '../store/store.js';
import type { AuditEvent, AuditInput } from './audit.js';
import { type CutOff, UnsavedTerminations } from './unsaved-terminations.js';

/** The audit log's one method this class uses, keeping what it was given. */
function recordingAudit() {
  const records: AuditInput[] = [];
  const record = async (event: AuditInput) => {
    records.push(event);
    return { ...event, id: `evt_${records.length}`, at: new Date(0).toISOString() } as unknown as AuditEvent;
  };
  return { records, audit: { record } };
}

const revokeOf = (fields: Partial<CutOff>): CutOff => ({
  event: 'revoked',
  connectorIds: ['con_a'],
  sessionsEnded: 0,
  audit: { type: 'connector.revoked', actor: { kind: 'system' }, connectorId: 'con_a' },
  ...fields,
});

const failWith = (details: Record<string, unknown>) =>
  Promise.reject(new DomainError('STORE_UNAVAILABLE', 'the store said no', details));

describe('the answer to a revoke whose write was not saved, or not confirmed', () => {
  it('a write the database may still save says so, instead of "the record still reads not revoked"', async () => {
    const { records, audit } = recordingAudit();
    const unsaved = new UnsavedTerminations(audit);
    const cut = unsaved.hold(revokeOf({ sessionsEnded: 1 }));
    const answer = await unsaved.settle(failWith({ mayBeSaved: true }), cut).catch((error) => error);
    expect(answer).toBeInstanceOf(DomainError);
    expect(answer.reason).toBe('REVOKE_NOT_SAVED');
    expect(answer.details).toMatchObject({ mayBeSaved: true, sessionsEnded: 1 });
    expect(answer.message).toBe(
      'Its live session was ended and its agent told it is revoked, but the database has not confirmed the revocation: it may still be saved (connectors get says whether it was). This server refuses its sessions until a retry succeeds; after a restart it would not: retry the revoke.',
    );
    expect(records[0]?.details).toMatchObject({ mayBeSaved: true });
    expect(unsaved.of('con_a')).toBe('revoked');
  });

  it('a session on another replica is not said to be ended: that replica hears of the change only once it is saved', async () => {
    const unsaved = new UnsavedTerminations(recordingAudit().audit);
    const cut = unsaved.hold(revokeOf({ sessionsElsewhere: 1 }));
    const answer = await unsaved.settle(failWith({}), cut).catch((error) => error);
    expect(answer.message).toBe(
      'It had no live session on this server; the revocation could not be saved: the record still reads not revoked and the group key was not regenerated. Its live session is on another server, which hears of it only once it is saved. This server refuses its sessions until a retry succeeds; after a restart it would not: retry the revoke.',
    );
    expect(answer.details).toMatchObject({ sessionsEnded: 0, sessionsElsewhere: 1 });
  });

  it('saved after the answer (the database confirmed it late): the hold is lifted then; not saved, it stays', async () => {
    const unsaved = new UnsavedTerminations(recordingAudit().audit);
    const outcomes: Array<(outcome: LateOutcome) => void> = [];
    const unconfirmed = () =>
      Promise.reject(
        new ChangeUnconfirmed(
          'not confirmed in time',
          new Promise<LateOutcome>((settle) => outcomes.push(settle)),
        ),
      );
    const saved = unsaved.hold(revokeOf({}));
    const lost = unsaved.hold(revokeOf({ connectorIds: ['con_b'] }));
    await expect(unsaved.settle(unconfirmed(), saved)).rejects.toMatchObject({ reason: 'REVOKE_NOT_SAVED' });
    await expect(unsaved.settle(unconfirmed(), lost)).rejects.toMatchObject({ reason: 'REVOKE_NOT_SAVED' });
    expect([unsaved.of('con_a'), unsaved.of('con_b')]).toEqual(['revoked', 'revoked']);
    outcomes[0]?.({ saved: true, result: null });
    outcomes[1]?.({ saved: false });
    await new Promise((resolve) => setImmediate(resolve));
    expect([unsaved.of('con_a'), unsaved.of('con_b')]).toEqual([undefined, 'revoked']);
  });

  it('a hold is lifted by the change that made it, not by an earlier one of the same kind', async () => {
    const unsaved = new UnsavedTerminations(recordingAudit().audit);
    let saveFirst: (value: string) => void = () => {};
    const first = unsaved.hold(revokeOf({}));
    const settled = unsaved.settle(new Promise<string>((resolve) => (saveFirst = resolve)), first);
    unsaved.hold(revokeOf({}));
    saveFirst('done');
    expect(await settled).toBe('done');
    expect(unsaved.of('con_a')).toBe('revoked');
  });

  it('saved: the hold is lifted and the result passes through', async () => {
    const unsaved = new UnsavedTerminations(recordingAudit().audit);
    const cut = unsaved.hold(revokeOf({}));
    expect(await unsaved.settle(Promise.resolve('done'), cut)).toBe('done');
    expect(unsaved.of('con_a')).toBeUndefined();
  });
});
