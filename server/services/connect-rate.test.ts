import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { ConnectRate } from './connect-rate.js';

describe('ConnectRate', () => {
  it('counts checked handshakes in a window from the first, and lets the connector in once it ends', () => {
    const clock = new ManualClock();
    const rate = new ConnectRate(clock, 3);
    for (let i = 0; i < 3; i++) {
      expect(rate.retryAfterSeconds('a')).toBe(0);
      rate.checked('a');
    }
    clock.advance(20_000);
    expect(rate.retryAfterSeconds('a')).toBe(40);
    expect(rate.retryAfterSeconds('b')).toBe(0);
    clock.advance(40_000);
    expect(rate.retryAfterSeconds('a')).toBe(0);
  });

  it('the wall clock stepped back an hour: a connector at its allowance waits at most a window, not the step', () => {
    const clock = new ManualClock();
    const rate = new ConnectRate(clock, 3);
    for (let i = 0; i < 3; i++) rate.checked('a');
    clock.advance(-3_600_000);
    expect(rate.retryAfterSeconds('a')).toBe(0);
    for (let i = 0; i < 3; i++) rate.checked('a');
    expect(rate.retryAfterSeconds('a')).toBe(60);
  });

  it('the wall clock stepped back an hour: a connector connecting every 2 min, behind a window from before the step, is never refused', () => {
    const clock = new ManualClock();
    const rate = new ConnectRate(clock, 3);
    rate.checked('before-the-step');
    clock.advance(-3_600_000);
    for (let i = 0; i < 40; i++) {
      expect(rate.retryAfterSeconds('b'), `connect ${i}`).toBe(0);
      rate.checked('b');
      clock.advance(120_000);
    }
  });
});
