import { describe, expect, it } from 'vitest';
import { freePort } from '../test/helpers/processes.js';
import { describeNetworkError } from './network-errors.js';

/** What a real fetch to `url` fails with. */
async function failureOf(url: string): Promise<unknown> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(5000) });
  } catch (error) {
    return error;
  }
  throw new Error(`${url} answered`);
}

describe('describeNetworkError', () => {
  it('says what is under "fetch failed": the code, or a port fetch refuses to use', async () => {
    // A port just let go of: nothing listens there, so the connection is refused.
    const port = await freePort();
    expect(describeNetworkError(await failureOf(`http://127.0.0.1:${port}/`))).toBe(
      `connect ECONNREFUSED 127.0.0.1:${port}`,
    );
    // Port 6000 is on fetch's list of blocked ports: refused before any connection.
    expect(describeNetworkError(await failureOf('http://127.0.0.1:6000/'))).toBe(
      'bad port: fetch refuses to connect to this port (one of the ports browsers block, such as 6000 or 10080); serve on another port',
    );
  });
});
