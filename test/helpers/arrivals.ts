/**
 * Waiting for something a callback will deliver (a session event, a batch, a close): callbacks call
 * `notify()` after recording what arrived; `until(check)` resolves with the first defined value of
 * `check`, or rejects after `timeoutMs` naming what it waited for and what had arrived (`seen()`).
 */
export function arrivals(seen: () => string) {
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of waiters) waiter();
  };
  const until = <T>(check: () => T | undefined, timeoutMs: number, what: string) =>
    new Promise<T>((resolve, reject) => {
      const done = () => {
        const value = check();
        if (value !== undefined) {
          waiters.delete(done);
          clearTimeout(timer);
          resolve(value);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(done);
        reject(new Error(`timed out waiting for ${what}; ${seen()}`));
      }, timeoutMs);
      waiters.add(done);
      done();
    });
  return { notify, until };
}
