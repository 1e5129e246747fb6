import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { clockSkewWatch, DatabaseClock } from './database-clock.js';

/** A monotonic clock the test moves. */
function monotonic() {
  let at = 1000;
  return { read: () => at, advance: (ms: number) => (at += ms) };
}

describe('DatabaseClock', () => {
  it("follows the database's clock from its reading on, by the monotonic clock, whatever the wall clock does", () => {
    const wall = new ManualClock(5_000_000);
    const mono = monotonic();
    const clock = new DatabaseClock(wall, mono.read);
    expect(clock.now()).toBe(5_000_000); // no reading yet: the wall clock
    expect(clock.wallSkewMs()).toBe(0);

    const asked = clock.asking();
    mono.advance(10); // the database read its clock somewhere in this 10 ms round trip
    clock.read(4_000_000, asked);
    expect(clock.now()).toBe(4_000_005); // taken as read in its middle
    expect(clock.wallSkewMs()).toBe(999_995);

    mono.advance(1000);
    wall.advance(-3_600_000); // stepped back an hour: nothing here moves with it
    expect(clock.now()).toBe(4_001_005);
    expect(clock.wallSkewMs()).toBe(5_000_000 - 3_600_000 - 4_001_005);
  });

  it('a reading with a round trip over a second is ignored once there is a better one', () => {
    const mono = monotonic();
    const clock = new DatabaseClock(new ManualClock(0), mono.read);
    let asked = clock.asking();
    mono.advance(2000);
    clock.read(100_000, asked); // the first is kept, however slow: better than the wall clock
    expect(clock.now()).toBe(101_000);
    asked = clock.asking();
    mono.advance(1500);
    clock.read(900_000, asked);
    expect(clock.now()).toBe(102_500);
    asked = clock.asking();
    mono.advance(4);
    clock.read(200_000, asked);
    expect(clock.now()).toBe(200_002);
  });
});

describe('clockSkewWatch', () => {
  it('warns once past 2 s, says once when back within 1 s', () => {
    const wall = new ManualClock(10_000);
    const mono = monotonic();
    const clock = new DatabaseClock(wall, mono.read);
    clock.read(10_000, clock.asking());
    const lines: Array<[string, object, string]> = [];
    const check = clockSkewWatch(clock, {
      warn: (details, message) => lines.push(['warn', details, message]),
      info: (details, message) => lines.push(['info', details, message]),
    });
    wall.advance(-2000);
    check();
    expect(lines).toEqual([]);
    wall.advance(-500);
    check();
    check();
    expect(lines).toHaveLength(1);
    expect(lines[0]![0]).toBe('warn');
    expect(lines[0]![1]).toEqual({ skewSeconds: -2.5 });
    expect(lines[0]![2]).toMatch(/^this host's clock is 2\.5 s behind the database server's/);
    wall.advance(1800);
    check();
    expect(lines).toHaveLength(2);
    expect(lines[1]!.slice(0, 2)).toEqual(['info', { skewSeconds: -0.7 }]);
  });
});
