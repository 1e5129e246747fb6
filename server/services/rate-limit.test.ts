import { describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { limitedAs } from './addresses.js';
import { MemoryAuditLog } from './audit.js';
import { AbuseLimiter, DEFAULT_RATE_LIMITS } from './rate-limit.js';

describe('per-address limits and IPv6', () => {
  it('count an IPv6 address as its /64, an IPv4 one (mapped or in a NAT64 address) as itself', () => {
    expect(limitedAs('2001:db8:0:1:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:0:1::/64');
    expect(limitedAs('2001:0DB8:0000:0001::7')).toBe('2001:db8:0:1::/64');
    expect(limitedAs('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(limitedAs('::1')).toBe('0:0:0:0::/64');
    expect(limitedAs('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(limitedAs('2001:db8:1:2::')).toBe('2001:db8:1:2::/64');
    expect(limitedAs('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(limitedAs('192.0.2.7')).toBe('192.0.2.7');
    expect(limitedAs('64:ff9b::192.0.2.7')).toBe('64:ff9b::192.0.2.7');
    expect(limitedAs('unknown')).toBe('unknown');
  });

  it('a client stepping through the addresses of its /64 meets the failure walls as one address', async () => {
    const audit = new MemoryAuditLog(new ManualClock());
    const limiter = new AbuseLimiter(
      { ...DEFAULT_RATE_LIMITS, enrollFailuresPerAddress: 3, handshakeFailuresPerAddress: 3 },
      audit,
    );
    const guess = `cpk_${'a'.repeat(12)}_${'b'.repeat(43)}`;
    for (let i = 1; i <= 3; i++) {
      const address = `2001:db8:0:1::${i.toString(16)}`;
      // A guess is counted as it is made (the router calls enrollFailed only for keys the server made).
      await limiter.enrollAttempt(address, guess, () => false);
      await limiter.handshakeFailed(address);
    }
    await expect(limiter.enrollAttempt('2001:db8:0:1::ffff', guess, () => false)).rejects.toMatchObject({
      reason: 'RATE_LIMITED',
    });
    expect(await limiter.handshakeRetryAfter('2001:db8:0:1:1:2:3:4')).toBeGreaterThan(0);
    // The next /64 over, and the audit names the address itself.
    await limiter.enrollAttempt('2001:db8:0:2::1', guess, () => false);
    expect(await limiter.handshakeRetryAfter('2001:db8:0:2::1')).toBe(0);
    const refused = await audit.list({ type: 'enrollment.refused' });
    expect(refused.map((e) => e.remoteAddress)).toEqual(['2001:db8:0:1::ffff']);
  });
});

describe('failure walls met by a burst', () => {
  it('100 guesses from one address at once: 60 pass to fail on their own, 40 are refused RATE_LIMITED; a genuine key still passes', async () => {
    const limiter = new AbuseLimiter(
      { ...DEFAULT_RATE_LIMITS, enrollPerAddressPerMinute: 10_000 },
      new MemoryAuditLog(new ManualClock()),
    );
    const outcomes = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        limiter
          .enrollAttempt('192.0.2.9', `cpk_${String(i).padStart(12, '0')}_${'b'.repeat(43)}`, () => false)
          .then(
            () => 'passed',
            (error: { reason?: string }) => error.reason,
          ),
      ),
    );
    expect(outcomes.filter((o) => o === 'passed')).toHaveLength(DEFAULT_RATE_LIMITS.enrollFailuresPerAddress);
    expect(outcomes.filter((o) => o === 'RATE_LIMITED')).toHaveLength(40);
    await expect(
      limiter.enrollAttempt('192.0.2.9', `cpk_${'c'.repeat(12)}_${'d'.repeat(43)}`, () => true),
    ).resolves.toEqual({
      counted: false,
    });
  });
});
