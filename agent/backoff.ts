/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(cap, base·2^attempt)]. The jitter
 * spreads a fleet's reconnects after a server restart instead of synchronising them.
 */
export function fullJitterDelayMs(
  attempt: number,
  baseMs = 1000,
  capMs = 60_000,
  random = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Resolves after `ms`, or early (false) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The longest a server's retry hint is followed: a wrong or hostile one must not park the agent for days. */
export const MAX_RETRY_HINT_MS = 3_600_000;

/**
 * A server's `retryAfterSeconds` as the wait it asks for: at least a second, at most
 * MAX_RETRY_HINT_MS; null when it is no positive number (the caller's backoff applies then).
 * Unchecked, a huge one overflowed setTimeout (which then fires after 1 ms) and a zero or negative
 * one waited nothing: either way requests as fast as the server answered them, for ever.
 */
export function retryHintMs(seconds: unknown): number | null {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds <= 0) return null;
  return Math.min(Math.max(seconds * 1000, 1000), MAX_RETRY_HINT_MS);
}
