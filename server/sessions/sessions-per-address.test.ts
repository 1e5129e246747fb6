import { describe, expect, it } from 'vitest';
import { SessionsPerAddress } from './sessions-per-address.js';

describe('SessionsPerAddress', () => {
  it('has room for an address until it holds max sessions, and again once one ends', () => {
    const cap = new SessionsPerAddress(2);
    expect(cap.hasRoom('192.0.2.1')).toBe(true);
    cap.add('192.0.2.1');
    cap.add('192.0.2.1');
    expect(cap.hasRoom('192.0.2.1')).toBe(false);
    // Another address is counted on its own.
    expect(cap.hasRoom('192.0.2.2')).toBe(true);
    cap.remove('192.0.2.1');
    expect(cap.hasRoom('192.0.2.1')).toBe(true);
    expect(cap.count('192.0.2.1')).toBe(1);
  });

  it('forgets an address whose last session ended, so a fleet passing through leaves nothing behind', () => {
    const cap = new SessionsPerAddress(Number.POSITIVE_INFINITY);
    for (let i = 0; i < 100; i++) cap.add(`198.51.100.${i}`);
    expect(cap.addresses).toBe(100);
    for (let i = 0; i < 100; i++) cap.remove(`198.51.100.${i}`);
    expect(cap.addresses).toBe(0);
    expect(cap.hasRoom('198.51.100.1')).toBe(true);
  });

  it('with a cap of zero has room for nobody, and refuses a cap that is not a count', () => {
    expect(new SessionsPerAddress(0).hasRoom('192.0.2.1')).toBe(false);
    expect(() => new SessionsPerAddress(Number.NaN)).toThrow(TypeError);
    expect(() => new SessionsPerAddress(-1)).toThrow(TypeError);
  });
});
