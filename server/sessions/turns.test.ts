import { describe, expect, it } from 'vitest';
import { authenticationTurns } from './turns.js';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('authenticationTurns', () => {
  it('lets at most N waiters go per event-loop turn, first come first served, until none is left', async () => {
    const turn = authenticationTurns(16);
    const order: number[] = [];
    for (let i = 0; i < 40; i++) void turn().then(() => order.push(i));
    expect(order).toEqual([]);
    await nextTurn();
    expect(order).toEqual([...Array(16).keys()]);
    await nextTurn();
    expect(order).toHaveLength(32);
    await nextTurn();
    expect(order).toEqual([...Array(40).keys()]);
    // Idle again: a later waiter starts a new round and is let go on the next turn.
    let late = false;
    void turn().then(() => {
      late = true;
    });
    await nextTurn();
    expect(late).toBe(true);
  });
});
