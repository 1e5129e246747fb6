import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type ConsoleBatch, ConsoleChanges } from './console-changes.js';

/** Collects what one subscription yields, until `stop`. */
function subscribe(changes: ConsoleChanges) {
  const batches: Array<ConsoleBatch & { atMs: number }> = [];
  const abort = new AbortController();
  const done = (async () => {
    for await (const batch of changes.stream(abort.signal)) batches.push({ ...batch, atMs: Date.now() });
  })();
  return {
    batches,
    stop: async () => {
      abort.abort();
      await done;
    },
  };
}

describe('ConsoleChanges', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  const feed = () => new ConsoleChanges({ groupOf: (id) => `grp_of_${id}` });

  it('names each changed connector and its group once per window', async () => {
    const changes = feed();
    const sub = subscribe(changes);
    await vi.advanceTimersByTimeAsync(0);
    changes.connectionChanged('con_a');
    changes.connectionChanged('con_a');
    changes.recordsChanged([{ section: 'groups', id: 'grp_x', groupId: 'grp_x' }]);
    changes.recordsChanged([{ section: 'apiKeys', id: 'ak_1', groupId: null }]);
    await vi.advanceTimersByTimeAsync(249);
    expect(sub.batches).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sub.batches).toEqual([
      { groups: ['grp_of_con_a', 'grp_x'], connectors: ['con_a'], resync: false, atMs: 250 },
    ]);
    await sub.stop();
    expect(changes.size).toBe(0);
  });

  it('keeps 250 ms between batches to one subscriber while changes keep coming', async () => {
    const changes = feed();
    const sub = subscribe(changes);
    await vi.advanceTimersByTimeAsync(0);
    for (let t = 0; t < 1000; t += 10) {
      changes.connectionChanged(`con_${t % 30}`);
      await vi.advanceTimersByTimeAsync(10);
    }
    await vi.advanceTimersByTimeAsync(500);
    const times = sub.batches.map((b) => b.atMs);
    expect(times).toEqual([250, 500, 750, 1000]);
    expect(sub.batches.every((b) => !b.resync && b.connectors.length <= 30)).toBe(true);
    await sub.stop();
  });

  it('turns 5,000 agents reconnecting over 5 s into a handful of resyncs, windows doubling up to 2 s', async () => {
    const changes = feed();
    const sub = subscribe(changes);
    await vi.advanceTimersByTimeAsync(0);
    // 50 connects every 50 ms for 5 s, as a fleet reconnecting after a restart.
    for (let i = 0; i < 5000; i++) {
      changes.connectionChanged(`con_${i}`);
      if (i % 50 === 49) await vi.advanceTimersByTimeAsync(50);
    }
    await vi.advanceTimersByTimeAsync(5000);
    expect(sub.batches.map((b) => b.atMs)).toEqual([250, 750, 1750, 3750, 5750]);
    expect(sub.batches.every((b) => b.resync && b.groups.length === 0 && b.connectors.length === 0)).toBe(
      true,
    );
    // After a quiet window the next change goes out after 250 ms again, with its ids.
    changes.connectionChanged('con_late');
    await vi.advanceTimersByTimeAsync(250);
    expect(sub.batches.at(-1)).toMatchObject({ connectors: ['con_late'], resync: false });
    await sub.stop();
  });

  it('sends ids up to 200 and a resync past them', async () => {
    const changes = new ConsoleChanges({ groupOf: () => null });
    const sub = subscribe(changes);
    await vi.advanceTimersByTimeAsync(0);
    for (let i = 0; i < 200; i++) changes.connectionChanged(`con_${i}`);
    await vi.advanceTimersByTimeAsync(250);
    expect(sub.batches.at(-1)?.connectors).toHaveLength(200);
    await vi.advanceTimersByTimeAsync(250); // a quiet window
    for (let i = 0; i < 201; i++) changes.connectionChanged(`con_${i}`);
    await vi.advanceTimersByTimeAsync(250);
    expect(sub.batches.at(-1)).toMatchObject({ groups: [], connectors: [], resync: true });
    await sub.stop();
  });

  it('costs nothing without a subscriber', () => {
    const groupOf = vi.fn(() => null);
    const changes = new ConsoleChanges({ groupOf });
    for (let i = 0; i < 100; i++) changes.connectionChanged(`con_${i}`);
    expect(groupOf).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
  });
});
