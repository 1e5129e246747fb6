import { describe, expect, it } from 'vitest';
import { FETCH_BLOCKED_PORTS } from './fetch-blocked-ports.js';

/** Whether this Node's fetch refuses `port` outright ("bad port"), without connecting. */
async function refused(port: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
    return false;
  } catch (error) {
    return (error as { cause?: { message?: string } }).cause?.message === 'bad port';
  }
}

describe('FETCH_BLOCKED_PORTS', () => {
  it("is what this Node's fetch refuses: every listed port, and none of the ports around them", async () => {
    for (const port of FETCH_BLOCKED_PORTS) expect(await refused(port), `port ${port}`).toBe(true);
    // Neighbours (loopback, nothing listens: refused by the OS, not by fetch) and the usual ones.
    const around = [...FETCH_BLOCKED_PORTS]
      .flatMap((p) => [p - 1, p + 1])
      .filter((p) => !FETCH_BLOCKED_PORTS.has(p));
    for (const port of [...around, 80, 443, 7420, 8080, 8443])
      expect(await refused(port), `port ${port}`).toBe(false);
  });
});
