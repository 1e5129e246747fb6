import { describe, expect, it } from 'vitest';
import { RetryAfterSpreader } from './retry-spreader.js';

function spreader(random = 0.999) {
  let now = 1_000_000;
  const s = new RetryAfterSpreader({ initialRatePerSecond: 256, now: () => now, random: () => random });
  return { s, advance: (ms: number) => (now += ms) };
}

describe('RetryAfterSpreader', () => {
  it('before any handshake has finished, spreads over crowd ÷ the assumed rate', () => {
    const { s } = spreader();
    // 256 in progress + this one shed, at 256/s: all within 2 s.
    expect(s.retryAfterSeconds(256)).toBe(2);
    expect(spreader(0).s.retryAfterSeconds(256)).toBe(1);
  });

  it('in a storm, spreads the crowd over the time the measured rate needs for it', () => {
    const { s, advance } = spreader();
    let last = 0;
    // 2 s of a storm: 750 handshakes finish per second while 3,000 upgrades a second are shed.
    for (let tick = 0; tick < 20; tick++) {
      for (let i = 0; i < 75; i++) s.noteFinished();
      for (let i = 0; i < 300; i++) last = s.retryAfterSeconds(256);
      advance(100);
    }
    // At the last shed, 1.9 s into the burst: (6,000 shed + 256 in progress) ÷ (1,500 finished ÷
    // 1.9 s) ≈ 7.9 s, so the largest draw is the horizon, 8 s.
    expect(last).toBe(8);
  });

  it('the draw is uniform over [1, horizon], and the horizon is capped at 60 s', () => {
    let now = 0;
    let random = 0;
    const s = new RetryAfterSpreader({ initialRatePerSecond: 1, now: () => now, random: () => random });
    const draws = new Set<number>();
    for (let i = 0; i < 200; i++) {
      random = i / 200;
      draws.add(s.retryAfterSeconds(10_000));
      now += 1;
    }
    expect(Math.min(...draws)).toBe(1);
    expect(Math.max(...draws)).toBe(60);
    expect(draws.size).toBe(60);
  });

  it('forgets a burst after a quiet window: the next one starts from its own numbers', () => {
    const { s, advance } = spreader();
    for (let i = 0; i < 5000; i++) s.retryAfterSeconds(256);
    expect(s.retryAfterSeconds(256)).toBeGreaterThan(10);
    advance(6_000);
    expect(s.retryAfterSeconds(0)).toBe(1);
  });

  it('a burst that began moments ago is measured over its own length, not the whole window', () => {
    const { s, advance } = spreader();
    // 400 finished in the first 0.5 s of a burst is 800/s, not 400/5 s = 80/s.
    for (let i = 0; i < 400; i++) s.noteFinished();
    advance(500);
    for (let i = 0; i < 1599; i++) s.retryAfterSeconds(0);
    // (1,600 shed) ÷ 800/s = 2 s.
    expect(s.retryAfterSeconds(0)).toBe(2);
  });
});
