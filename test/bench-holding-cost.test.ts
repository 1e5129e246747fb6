import { describe, expect, it } from 'vitest';
import { idleRateAt, marginalCpuUsPerSession } from '../scripts/bench/lib/holding-cost.js';

describe('bench: CPU per connect with the cost of holding sessions taken off', () => {
  it('the idle rate is the line through the readings before and after, never negative', () => {
    const before = { sessions: 1000, cpuMsPerS: 5 };
    const after = { sessions: 3000, cpuMsPerS: 15 };
    expect(idleRateAt(before, after, 2000)).toBe(10);
    expect(idleRateAt(before, after, 0)).toBe(0);
    // Fewer after than before (a noisy reading): a flat line at the first.
    expect(idleRateAt(before, { sessions: 3000, cpuMsPerS: 2 }, 2000)).toBe(5);
  });

  it('each server pays, in each turn, its rate at the mean sessions it held, times the turn', () => {
    // Two servers, 10 ms/s idle per 1,000 sessions held (0 at none). Turn 1: A takes 1,000 in 2 s
    // (mean 500: 5 ms/s, 10 ms); B holds none. Turn 2: B takes 1,000 in 2 s (10 ms); A holds its
    // 1,000 (10 ms/s, 20 ms).
    const line = { before: { sessions: 0, cpuMsPerS: 0 }, after: { sessions: 1000, cpuMsPerS: 10 } };
    const turns = [
      { ms: 2000, cpuMs: [1010, 0], sessionsFrom: [0, 0], sessionsTo: [1000, 0] },
      { ms: 2000, cpuMs: [20, 1010], sessionsFrom: [1000, 0], sessionsTo: [1000, 1000] },
    ];
    // Raw: 2,040 ms for 2,000 = 1,020 µs; holding taken off: 2,000 ms = 1,000 µs.
    expect(marginalCpuUsPerSession(turns, [line, line])).toBeCloseTo(1000, 6);
    expect(marginalCpuUsPerSession([], [line])).toBeNull();
  });
});
