import { afterEach, describe, expect, it, vi } from 'vitest';
import { IdentitySaver } from './identity-saver.js';
import type { SavedIdentity } from './identity-store.js';

afterEach(() => vi.useRealTimers());

const identity = (expiresAt: string) => ({ identityExpiresAt: expiresAt }) as SavedIdentity;

/** A store whose disk is full until `room()`; what it saved, in order. */
function fullDisk() {
  let full = true;
  const saved: string[] = [];
  return {
    dir: '/var/lib/connector-agent',
    saved,
    room: () => {
      full = false;
    },
    async save(i: SavedIdentity) {
      if (full) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      saved.push(i.identityExpiresAt);
    },
  };
}

describe('IdentitySaver', () => {
  it('keeps a renewed identity the disk would not take, says so once, and saves it when there is room', async () => {
    vi.useFakeTimers();
    const store = fullDisk();
    const lines: string[] = [];
    const logger = { error: (m: string) => lines.push(m), info: (m: string) => lines.push(m) };
    let current = identity('2027-06-01T00:00:00.000Z');
    const saver = new IdentitySaver(store, logger, () => current, 60_000);
    expect(await saver.save('2027-01-01T00:00:00.000Z')).toBe(false);
    expect(lines).toEqual([
      expect.stringMatching(
        /^cannot write in the state dir \/var\/lib\/connector-agent \(ENOSPC: the disk is full\): the renewed identity \(expires 2027-06-01.*\) is kept in memory .* the one saved expires 2027-01-01/,
      ),
    ]);
    await vi.advanceTimersByTimeAsync(180_000); // three more tries, none said again
    expect(lines).toHaveLength(1);
    // A newer renewal meanwhile: the retry saves whichever is current.
    current = identity('2027-07-01T00:00:00.000Z');
    store.room();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(store.saved).toEqual(['2027-07-01T00:00:00.000Z']);
    expect(lines.at(-1)).toBe('renewed identity saved');
    await vi.advanceTimersByTimeAsync(600_000);
    expect(store.saved).toHaveLength(1); // no retry once saved
  });

  it('tries once more at exit (flush), and stops retrying', async () => {
    vi.useFakeTimers();
    const store = fullDisk();
    const saver = new IdentitySaver(store, { error: () => {}, info: () => {} }, () =>
      identity('2027-06-01T00:00:00.000Z'),
    );
    await saver.save('2027-01-01T00:00:00.000Z');
    store.room();
    await saver.flush();
    expect(store.saved).toEqual(['2027-06-01T00:00:00.000Z']);
    expect(vi.getTimerCount()).toBe(0);
  });
});
