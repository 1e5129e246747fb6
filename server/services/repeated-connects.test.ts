import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { type ConnectsSummary, RepeatedConnects } from './repeated-connects.js';

const party = (remoteAddress: string) => ({ connectorId: 'con_a', groupId: 'grp_a', remoteAddress });

describe('RepeatedConnects', () => {
  it('holds nothing for connects a window apart; past the window budget, counts connects, replacements and renewals into one summary naming the addresses', () => {
    const clock = new ManualClock(1_000_000);
    const summaries: ConnectsSummary[] = [];
    const repeated = new RepeatedConnects(clock, (s) => summaries.push(s), 2, 60_000);
    // Connects a minute or more apart: every one audited, renewals too, nothing counted.
    expect(repeated.admit(party('10.0.0.1'), null, false)).toBe(true);
    clock.advance(60_000);
    expect(repeated.admit(party('10.0.0.1'), clock.now() - 60_000, false)).toBe(true);
    expect(repeated.admitRenewal('con_a')).toBe(true);
    // A loop: the second opens the window (audited), one more audited, the rest counted.
    let previous = clock.now();
    const results: boolean[] = [];
    for (const address of ['10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.2', '10.0.0.1']) {
      clock.advance(1000);
      results.push(repeated.admit(party(address), previous, true));
      previous = clock.now();
    }
    expect(results).toEqual([true, true, false, false, false]);
    expect(repeated.admitRenewal('con_a')).toBe(false);
    expect(summaries).toEqual([]);
    clock.advance(60_000);
    expect(repeated.admit(party('10.0.0.1'), previous, false)).toBe(true);
    expect(summaries).toEqual([
      expect.objectContaining({
        suppressed: 3,
        replaced: 3,
        renewed: 1,
        addresses: ['10.0.0.1', '10.0.0.2'],
      }),
    ]);
    repeated.close();
  });
});
