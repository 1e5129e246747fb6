import { TRPCClientError } from '@trpc/client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createRenewalTimer, type RenewableIdentity } from './renewal.js';

const logger = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} };

/** An unsigned token with the given `iat`: the timer reads only that. */
function identity(issuedAtMs: number, lifetimeMs: number): RenewableIdentity {
  const payload = Buffer.from(JSON.stringify({ iat: issuedAtMs / 1000 })).toString('base64url');
  return {
    identityToken: `e30.${payload}.sig`,
    identityExpiresAt: new Date(issuedAtMs + lifetimeMs).toISOString(),
  };
}

describe('the agent’s own renewal timer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: Date.parse('2026-06-01T00:00:00Z') });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('asks when a quarter to 30 % of the lifetime is left, and again from the identity it adopts', async () => {
    const start = Date.now();
    const renew = vi.fn(async () => identity(Date.now(), 60_000));
    const timer = createRenewalTimer({
      renew,
      adopt: async (renewed) => timer.arm(renewed),
      logger,
      random: () => 0,
    });
    timer.arm(identity(start, 60_000));
    await vi.advanceTimersByTimeAsync(44_999);
    expect(renew).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(renew).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(45_000);
    expect(renew).toHaveBeenCalledTimes(2);
    timer.stop();
  });

  it('stays idle when a pushed identity re-arms it first, and times a year-long identity in steps', async () => {
    const renew = vi.fn(async () => identity(Date.now(), 1000));
    const timer = createRenewalTimer({ renew, adopt: async () => {}, logger, random: () => 0 });
    timer.arm(identity(Date.now(), 60_000));
    await vi.advanceTimersByTimeAsync(30_000);
    const year = 365 * 86_400_000;
    timer.arm(identity(Date.now(), year));
    await vi.advanceTimersByTimeAsync(year * 0.75 - 1000);
    expect(renew).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1000);
    expect(renew).toHaveBeenCalledTimes(1);
    timer.stop();
  });

  it('adopts a renewal that expires sooner than the identity it replaces (the server’s --identity-ttl shortened)', async () => {
    const renew = vi.fn(async () => identity(Date.now(), 10_000));
    const adopt = vi.fn(async () => {});
    const timer = createRenewalTimer({ renew, adopt, logger, random: () => 0 });
    timer.arm(identity(Date.now(), 100_000));
    await vi.advanceTimersByTimeAsync(75_000);
    expect(renew).toHaveBeenCalledTimes(1);
    expect(adopt).toHaveBeenCalledTimes(1);
    timer.stop();
  });

  it('retries after a failure, at the server’s retryAfterSeconds when it gives one', async () => {
    const notDue = new TRPCClientError('not due', {
      result: { error: { data: { reason: 'RATE_LIMITED', retryAfterSeconds: 5 } } },
    } as never);
    const renew = vi
      .fn<() => Promise<RenewableIdentity>>()
      .mockRejectedValueOnce(new Error('socket closed'))
      .mockRejectedValueOnce(notDue)
      .mockImplementation(async () => identity(Date.now(), 100_000));
    const adopt = vi.fn(async () => {});
    const timer = createRenewalTimer({ renew, adopt, logger, random: () => 0 });
    timer.arm(identity(Date.now(), 100_000));
    await vi.advanceTimersByTimeAsync(75_000);
    expect(renew).toHaveBeenCalledTimes(1);
    // A quarter of the 25 s left.
    await vi.advanceTimersByTimeAsync(6_250);
    expect(renew).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(renew).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(renew).toHaveBeenCalledTimes(3);
    expect(adopt).toHaveBeenCalledTimes(1);
    timer.stop();
  });

  it.each([
    ['zero', 0],
    ['negative', -1],
    ['huge', 1e12],
  ])(
    'a %s retryAfterSeconds from a server is no tight loop of agent.renew over the session',
    async (_label, retryAfterSeconds) => {
      const refusal = new TRPCClientError('not due', {
        result: { error: { data: { reason: 'RATE_LIMITED', retryAfterSeconds } } },
      } as never);
      const renew = vi.fn<() => Promise<RenewableIdentity>>().mockRejectedValue(refusal);
      const timer = createRenewalTimer({ renew, adopt: async () => {}, logger, random: () => 0 });
      timer.arm(identity(Date.now(), 100_000));
      await vi.advanceTimersByTimeAsync(75_000);
      expect(renew).toHaveBeenCalledTimes(1);
      // Within the next 10 s: at most one more a second (the least a hint is taken for).
      await vi.advanceTimersByTimeAsync(10_000);
      expect(renew.mock.calls.length).toBeLessThanOrEqual(11);
      timer.stop();
    },
  );
});
