import { describe, expect, it } from 'vitest';
import { replicasSummary, unmetExpectation } from './replica-commands.js';

const replica = (id: string, state: 'live' | 'dead', ready: boolean | null, problems: string[] = []) => ({
  id,
  state,
  ready,
  problems,
});

describe('replicas --expect', () => {
  it('is met by live replicas that are ready or do not say', () => {
    const listed = [replica('aaaaaaaa-1', 'live', true), replica('bbbbbbbb-2', 'live', null)];
    expect(unmetExpectation(listed, 2)).toBeNull();
    expect(unmetExpectation(listed, 1)).toBeNull();
  });

  it('names each replica that cannot serve: dead, or not ready with its reasons', () => {
    const listed = [
      replica('aaaaaaaa-1', 'live', true),
      replica('bbbbbbbb-2', 'dead', false),
      replica('cccccccc-3', 'live', false, ['the database is unreachable', 'the listener is down']),
    ];
    expect(unmetExpectation(listed, 3)).toBe(
      '1 of the 3 expected replicas are live and ready: bbbbbbbb dead, cccccccc not ready ' +
        '(the database is unreachable; the listener is down)\n' +
        '  fix: start the missing ones, or read the not-ready ones\' /healthz and log (README: "When something fails")',
    );
  });

  it('counts replicas missing from the list too', () => {
    expect(unmetExpectation([replica('aaaaaaaa-1', 'live', true)], 3)).toMatch(
      /^1 of the 3 expected replicas are live and ready: 2 not listed \(stopped, never started, or dead for over 15 s and removed\)\n/,
    );
  });
});

describe('the line under the replicas table', () => {
  it('counts the sessions of live replicas; those a dead one listed are said apart, with when it goes', () => {
    const summary = replicasSummary({
      deadAfterMs: 15_000,
      replicas: [
        { state: 'live', sessions: 2 },
        { state: 'live', sessions: 1 },
        { state: 'dead', sessions: 1 },
      ],
    });
    expect(summary).toBe(
      "2 live replicas, 1 dead (removed by a live replica's heartbeat once it has been up 15 s itself); " +
        '3 agent sessions (and 1 listed by dead replicas, gone with them). * the replica that answered. ' +
        'A heartbeat comes every 5 s; one older than 15 s counts as dead.',
    );
    expect(replicasSummary({ deadAfterMs: 15_000, replicas: [{ state: 'live', sessions: 1 }] })).toBe(
      '1 live replica; 1 agent session. * the replica that answered. A heartbeat comes every 5 s; one older than 15 s counts as dead.',
    );
  });
});
