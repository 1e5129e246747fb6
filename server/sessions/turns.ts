/**
 * Hands out turns to authenticate, a few per event-loop turn, first come first served: a reconnect
 * storm delivers thousands of connectionParams in one poll of the event loop, and verifying them
 * all at once stalled it for seconds (timers, admin calls and revokes waited behind them).
 */
export function authenticationTurns(perTurn: number): () => Promise<void> {
  let waiting: Array<() => void> = [];
  let next = 0;
  let draining = false;
  const drain = () => {
    const end = Math.min(next + perTurn, waiting.length);
    for (; next < end; next++) waiting[next]!();
    if (next < waiting.length) {
      setImmediate(drain);
      return;
    }
    waiting = [];
    next = 0;
    draining = false;
  };
  return () =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (!draining) {
        draining = true;
        setImmediate(drain);
      }
    });
}
