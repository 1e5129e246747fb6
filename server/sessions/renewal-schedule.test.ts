import { describe, expect, it } from 'vitest';
import { RenewalSchedule } from './renewal-schedule.js';

describe('RenewalSchedule', () => {
  it('hands items out when due, never early and at most one bucket late, earliest first', () => {
    const schedule = new RenewalSchedule<string>(1000);
    schedule.add('late', 5_500);
    schedule.add('early', 2_000);
    schedule.add('middle', 3_200);
    expect(schedule.popDue(1_999)).toEqual([]);
    expect(schedule.popDue(2_000)).toEqual(['early']);
    expect(schedule.popDue(3_999)).toEqual([]);
    expect(schedule.popDue(10_000)).toEqual(['middle', 'late']);
    expect(schedule.size).toBe(0);
  });

  it('moves an item re-added and forgets a deleted one, even when its bucket comes back', () => {
    const schedule = new RenewalSchedule<string>(1000);
    schedule.add('a', 1_000);
    schedule.add('b', 1_000);
    schedule.delete('a');
    schedule.delete('b');
    schedule.add('a', 1_000);
    schedule.add('b', 9_000);
    expect(schedule.popDue(5_000)).toEqual(['a']);
    expect(schedule.popDue(5_000)).toEqual([]);
    expect(schedule.popDue(9_000)).toEqual(['b']);
  });

  it('keeps thousands of due times in order across a clock jump of a year', () => {
    const schedule = new RenewalSchedule<number>(1000);
    const year = 365 * 86_400_000;
    for (let i = 0; i < 5000; i++) schedule.add(i, ((i * 7919) % 5000) * 60_000);
    const popped = schedule.popDue(year);
    expect(popped).toHaveLength(5000);
    const dueOf = (i: number) => ((i * 7919) % 5000) * 60_000;
    for (let i = 1; i < popped.length; i++) expect(dueOf(popped[i]!)).toBeGreaterThan(dueOf(popped[i - 1]!));
  });
});
