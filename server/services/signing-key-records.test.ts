import { describe, expect, it } from 'vitest';
import { newSigningKey } from './signing-key-records.js';

describe('new signing keys', () => {
  it("never get a kid starting with '-' (it would read as an option in `signing-keys retire <kid>`)", async () => {
    // 1 kid in 64 starts with '-': 400 keys without the redraw all avoid it with odds of 0.2 %.
    const kids = await Promise.all(Array.from({ length: 400 }, () => newSigningKey(0, 0).then((k) => k.kid)));
    expect(kids.filter((kid) => kid.startsWith('-'))).toEqual([]);
    expect(new Set(kids).size).toBe(400);
  });
});
