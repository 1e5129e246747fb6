import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { ClusterPicture } from './cluster-picture.js';
import type { LostSession } from './cluster-sessions.js';

function picture(maxRemote?: number) {
  const clock = new ManualClock();
  const lost: LostSession[] = [];
  const verified: string[] = [];
  const p = new ClusterPicture(
    clock,
    15_000,
    (l) => lost.push(l),
    (connectorId) => verified.push(connectorId),
    maxRemote,
  );
  const admit = (connectorId: string, sessionId = 1) =>
    p.admitted({ connectorId, sessionId, remoteAddress: '192.0.2.1', connectedAt: clock.now() });
  return { clock, lost, verified, p, admit };
}

describe('ClusterPicture: the larger claim number wins, whatever order the news comes in', () => {
  it('a larger remote claim replaces ours; a smaller one is ignored', () => {
    const { p, lost, admit } = picture();
    p.numbered(admit('con_1'), 10);
    p.claimed('con_1', 'r2', 9, '192.0.2.9');
    expect(lost).toEqual([]);
    expect(p.isConnectedElsewhere('con_1')).toBe(false);
    p.claimed('con_1', 'r2', 11, '192.0.2.2');
    expect(lost).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: '192.0.2.2' }]);
    expect(p.isConnectedElsewhere('con_1')).toBe(true);
  });

  it('a remote claim heard while ours is on its way is compared when our number comes back', () => {
    const { p, lost, admit } = picture();
    const ours = admit('con_1');
    const theirs = admit('con_2');
    p.claimed('con_1', 'r2', 7, '192.0.2.2');
    p.claimed('con_2', 'r2', 5, '192.0.2.2');
    p.numbered(ours, 6);
    p.numbered(theirs, 8);
    expect(lost).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: '192.0.2.2' }]);
    expect(p.isConnectedElsewhere('con_1')).toBe(true);
    expect(p.isConnectedElsewhere('con_2')).toBe(false); // ours replaced it
  });

  it('a release removes only the claim it names', () => {
    const { p } = picture();
    p.claimed('con_1', 'r2', 3, '192.0.2.2');
    p.claimed('con_1', 'r3', 4, '192.0.2.3');
    p.released('con_1', 3);
    expect(p.isConnectedElsewhere('con_1')).toBe(true);
    p.released('con_1', 4);
    expect(p.isConnectedElsewhere('con_1')).toBe(false);
  });

  it('an ended session is not lost later, and ending a replaced one finds nothing to release', () => {
    const { p, lost, admit } = picture();
    p.numbered(admit('con_1', 1), 1);
    expect(p.ended('con_1', 1)?.claim).toBe(1);
    p.claimed('con_1', 'r2', 2, '192.0.2.2');
    expect(lost).toEqual([]);
    p.numbered(admit('con_2', 2), 3);
    p.claimed('con_2', 'r2', 4, '192.0.2.2');
    expect(p.ended('con_2', 2)).toBeUndefined();
  });

  it('a replica silent past the bound, or gone from the table, takes its sessions with it', () => {
    const { p, clock } = picture();
    p.heard('r2', clock.now());
    p.heard('r3', clock.now());
    p.claimed('con_1', 'r2', 1, '192.0.2.2');
    p.claimed('con_2', 'r3', 2, '192.0.2.3');
    clock.advance(15_000);
    expect(p.connectedElsewhere()).toBe(2);
    clock.advance(1);
    expect(p.connectedElsewhere()).toBe(0);
    p.heard('r3', clock.now());
    expect(p.isConnectedElsewhere('con_2')).toBe(true);
    p.replicasListed(new Set(['r2']));
    expect(p.isConnectedElsewhere('con_2')).toBe(false);
  });

  it('a full read drops remote sessions it neither saw nor heard of since it began', () => {
    const { p } = picture();
    p.claimed('con_1', 'r2', 1, '192.0.2.2');
    p.claimed('con_2', 'r2', 2, '192.0.2.2');
    const mark = p.readMark();
    p.claimed('con_2', 'r2', 2, '192.0.2.2'); // seen by the read
    p.confirmedSince(mark);
    expect([p.isConnectedElsewhere('con_1'), p.isConnectedElsewhere('con_2')]).toEqual([false, true]);
  });
});

describe('ClusterPicture: a heard claim ends no session until the table confirms it', () => {
  it('a larger heard claim is shown, and checked, but replaces nothing; the table’s answer decides', () => {
    const { lost, verified, p, admit } = picture();
    p.numbered(admit('con_1'), 10);
    p.heardClaim('con_1', 'r2', 9_000_000_000_000, '192.0.2.66');
    expect(lost).toEqual([]);
    expect(verified).toEqual(['con_1']);
    expect(p.isConnectedElsewhere('con_1')).toBe(true);
    // The table has no such claim above ours: forgotten, ours stays.
    p.refuted('con_1');
    expect(p.isConnectedElsewhere('con_1')).toBe(false);
    expect(lost).toEqual([]);
    // A real one: heard, checked, then the table's row replaces ours (its address, not the payload's).
    p.heardClaim('con_1', 'r2', 11, '203.0.113.5');
    p.claimed('con_1', 'r2', 11, '192.0.2.2');
    expect(lost).toEqual([{ connectorId: 'con_1', sessionId: 1, replacedBy: '192.0.2.2' }]);
  });

  it('a heard claim larger than ours when our number comes back: checked, not obeyed', () => {
    const { lost, verified, p, admit } = picture();
    const ours = admit('con_1');
    p.heardClaim('con_1', 'r2', 50, '192.0.2.66');
    expect(verified).toEqual([]); // nothing of ours to end yet
    p.numbered(ours, 10);
    expect([lost, verified]).toEqual([[], ['con_1']]);
  });

  it('a smaller heard claim is ignored without a check; a confirmed claim heard again stays confirmed', () => {
    const { lost, verified, p, admit } = picture();
    p.numbered(admit('con_1'), 10);
    p.heardClaim('con_1', 'r2', 9, '192.0.2.9');
    expect([lost, verified]).toEqual([[], []]);
    p.claimed('con_2', 'r2', 5, '192.0.2.2');
    p.heardClaim('con_2', 'r2', 5, '192.0.2.2');
    p.refuted('con_2'); // only a claim nothing confirmed is refuted
    expect(p.isConnectedElsewhere('con_2')).toBe(true);
  });

  it('replicas only heard of (any id a notification names) are forgotten once a listing lacks them', () => {
    const { p, clock } = picture();
    for (let i = 0; i < 100; i++) {
      p.heard(`made-up-${i}`, clock.now()); // as a notification does
      p.heardClaim(`con_${i}`, `made-up-${i}`, i + 1, '192.0.2.66');
    }
    p.heard('r2', clock.now());
    expect(p.trackedReplicas).toBe(101);
    p.replicasListed(new Set(['r2']));
    expect([p.trackedReplicas, p.connectedElsewhere()]).toEqual([1, 0]);
  });
});

describe('ClusterPicture: bounded against a flood of made-up claims', () => {
  it("past maxRemote, a claim only heard of for a connector it knows nothing of is not kept; the table's claims, known connectors and own ones still are", () => {
    const { p, verified } = picture(3);
    for (let i = 1; i <= 5; i++) p.heardClaim(`con_${i}`, 'r2', i, '192.0.2.2');
    expect([1, 2, 3, 4, 5].map((i) => p.isConnectedElsewhere(`con_${i}`))).toEqual([
      true,
      true,
      true,
      false,
      false,
    ]);
    expect(p.unheard).toBe(2);
    // A known connector's newer claim still replaces what it held.
    p.heardClaim('con_1', 'r3', 9, '192.0.2.3');
    expect(p.holderElsewhere('con_1')).toBe('r3');
    // What a full read (or a check in the table) confirms is kept past the bound.
    p.claimed('con_4', 'r2', 4, '192.0.2.2');
    expect(p.isConnectedElsewhere('con_4')).toBe(true);
    // A heard claim that would end one of this replica's sessions is still checked in the table.
    p.numbered(
      p.admitted({ connectorId: 'con_9', sessionId: 1, remoteAddress: '192.0.2.1', connectedAt: 0 }),
      1,
    );
    p.heardClaim('con_9', 'r2', 20, '192.0.2.2');
    expect(verified).toContain('con_9');
    expect(p.unheard).toBe(2);
  });
});
