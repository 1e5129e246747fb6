import { describe, expect, it } from 'vitest';
import { pointInTime } from './flags.js';

describe('pointInTime (--since)', () => {
  const now = Date.parse('2026-12-03T12:00:00Z');
  const parse = (text: string) => pointInTime(() => now).parse(text);

  it('takes an ISO date-time, a date (midnight UTC) or how long ago', () => {
    expect(parse('2026-12-01T09:30:00Z')).toBe('2026-12-01T09:30:00.000Z');
    expect(parse('2026-12-01T09:30:00+01:00')).toBe('2026-12-01T08:30:00.000Z');
    expect(parse('2026-12-01')).toBe('2026-12-01T00:00:00.000Z');
    expect(parse('2h')).toBe('2026-12-03T10:00:00.000Z');
    expect(parse('7d')).toBe('2026-11-26T12:00:00.000Z');
  });

  it("a date-time without a zone is UTC, as every time the CLI prints, whatever the host's zone", () => {
    const zone = process.env.TZ;
    process.env.TZ = 'Asia/Tokyo';
    try {
      // The host's zone is in force (Date.parse would read the next ones 9 h earlier).
      expect(new Date(2026, 11, 1, 9, 30).toISOString()).toBe('2026-12-01T00:30:00.000Z');
      expect(parse('2026-12-01T09:30:00')).toBe('2026-12-01T09:30:00.000Z');
      expect(parse('2026-12-01T09:30')).toBe('2026-12-01T09:30:00.000Z');
      expect(parse('2026-12-01 09:30:00.250')).toBe('2026-12-01T09:30:00.250Z');
    } finally {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    }
  });

  it('refuses anything else with the forms it takes', () => {
    for (const text of ['yesterday', '2026-13-45', '12/01/2026', '', '-2h'])
      expect(() => parse(text)).toThrow(/is not a time: give an ISO date-time .* a date .* or how long ago/);
  });
});
