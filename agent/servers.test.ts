import { describe, expect, it } from 'vitest';
import { parseServerList, UsageError } from './config.js';
import { allKnown, ServerRotation } from './servers.js';

describe('several --server URLs', () => {
  it('are taken repeated or comma-separated, each checked, duplicates once', () => {
    expect(
      parseServerList(
        ['https://a.example.com/, https://b.example.com', 'https://a.example.com', ' https://c.example.com '],
        false,
      ),
    ).toEqual(['https://a.example.com', 'https://b.example.com', 'https://c.example.com']);
    expect(() => parseServerList(['https://a.example.com,http://b.example.com'], false)).toThrow(
      /refusing plain http/,
    );
    expect(() => parseServerList([' , '], false)).toThrow(UsageError);
    expect(() => parseServerList([], false)).toThrow(/--server URL is required/);
    const many = Array.from({ length: 17 }, (_, i) => `https://r${i}.example.com`).join(',');
    expect(() => parseServerList([many], false)).toThrow(/at most 16/);
  });

  it('are tried from a random one on, then round the list', () => {
    const servers = ['https://a', 'https://b', 'https://c'];
    const starts = new Set(Array.from({ length: 300 }, () => new ServerRotation(servers).current));
    expect(starts).toEqual(new Set(servers)); // 300 draws miss one of 3 with odds of 3·(2/3)^300
    const rotation = new ServerRotation(servers);
    const first = rotation.current;
    const order = [rotation.next(), rotation.next(), rotation.next()];
    expect(order[2]).toBe(first);
    expect(new Set(order)).toEqual(new Set(servers));
    expect(new ServerRotation(['https://only']).next()).toBe('https://only');
  });

  it('an identity may be presented to a subset of the servers it was issued for, not to a new one', () => {
    expect(allKnown(['https://a'], ['https://a', 'https://b'])).toBe(true);
    expect(allKnown(['https://a', 'https://c'], ['https://a', 'https://b'])).toBe(false);
  });
});
