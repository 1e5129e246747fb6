import { describe, expect, it } from 'vitest';
import { FailedAttempts, SAY_AGAIN_AT_LEAST_EVERY_MS } from './failed-attempts.js';

const REFUSED = 'connect ECONNREFUSED 127.0.0.1:7420';

/** Fails `n` attempts `stepMs` apart on a moved clock; returns the attempt numbers that said something. */
function attemptsThatSpoke(n: number, stepMs: number) {
  let now = 1_000_000;
  const attempts = new FailedAttempts(() => now);
  const spoke: number[] = [];
  for (let i = 1; i <= n; i++) {
    if (attempts.failed(REFUSED, 'cannot connect; retrying')) spoke.push(i);
    now += stepMs;
  }
  return spoke;
}

describe('FailedAttempts', () => {
  it('says a problem once, then at each doubling of the attempts while they come fast', () => {
    expect(attemptsThatSpoke(40, 1_000)).toEqual([1, 2, 4, 8, 16, 32]);
  });

  it('says it again at least every 15 minutes at the backoff cap, with how long it has been failing', () => {
    let now = 0;
    const attempts = new FailedAttempts(() => now);
    const said: Array<{ attempt: number; at: number; failingFor: unknown }> = [];
    // 12 hours of attempts 60 s apart (the cap): doublings alone would say it at 1 h, 2 h, 4 h, 8.5 h.
    for (let i = 1; i <= 720; i++) {
      const notice = attempts.failed(REFUSED, 'cannot connect; retrying');
      if (notice && i > 1) said.push({ attempt: i, at: now, failingFor: notice.fields.failingFor });
      now += 60_000;
    }
    const gaps = said.slice(1).map((s, i) => s.at - (said[i]?.at ?? 0));
    expect(Math.max(...gaps)).toBeLessThanOrEqual(SAY_AGAIN_AT_LEAST_EVERY_MS);
    // About four lines an hour, not one per attempt.
    expect(said.length).toBeGreaterThanOrEqual(12 * 4 - 1);
    expect(said.length).toBeLessThanOrEqual(12 * 4 + 8);
    expect(said.at(-1)?.failingFor).toMatch(/^1[12]h$/);
  });

  it('keeps each distinct problem, says a new one at once, and starts over after a session', () => {
    let now = 0;
    const attempts = new FailedAttempts(() => now);
    const other = 'getaddrinfo ENOTFOUND enroll.example.com';
    expect(attempts.failed(REFUSED, 'cannot connect; retrying')?.message).toBe('cannot connect; retrying');
    now += 1_000;
    expect(attempts.failed(other, 'cannot connect; retrying')?.fields).toEqual({ error: other });
    now += 1_000;
    expect(attempts.failed(REFUSED, 'cannot connect; retrying')).toBeNull(); // the 3rd attempt
    now += 1_000;
    expect(attempts.failed(other, 'x')).toMatchObject({
      message: 'still cannot connect after 4 attempts; retrying',
      fields: { error: other, failingFor: '3s' },
    });
    attempts.connected();
    expect(attempts.failed(REFUSED, 'cannot connect; retrying')?.message).toBe('cannot connect; retrying');
    expect(attempts.failed(REFUSED, 'cannot connect; retrying')?.fields.failingFor).toBe('0ms');
  });
});
