import { describe, expect, it } from 'vitest';
import { EXIT } from './exit-codes.js';
import { ServerClock } from './server-clock.js';
import { ServerRotation } from './servers.js';
import { SessionLink } from './session-link.js';

/** A refused connect, as the websocket's error event carries it. */
const refused = (port: number) => ({
  error: Object.assign(new Error(`connect ECONNREFUSED 127.0.0.1:${port}`), { code: 'ECONNREFUSED' }),
});

describe('an unenroll that cannot reach a server of its list', () => {
  it('tries the next one, and stops (exit 10) only once every server of the list has failed', () => {
    // Nothing listens on these ports (below 1024, not bound by tests).
    const [first, second] = ['http://127.0.0.1:9', 'http://127.0.0.1:13'];
    const servers = new ServerRotation([first!, second!]);
    // The rotation starts at random: from the first here, so the second is the one left to try.
    if (servers.current !== first) servers.next();
    const lines: string[] = [];
    const stops: Array<{ code: number; detail: string }> = [];
    const logger = {
      info: (message: string) => lines.push(`info ${message}`),
      warn: (message: string) => lines.push(`warn ${message}`),
      error: (message: string) => lines.push(`error ${message}`),
    };
    const link = new SessionLink({
      logger,
      servers,
      serverClock: new ServerClock(logger),
      identityExpiresAt: () => new Date(Date.now() + 86_400_000).toISOString(),
      unenrolling: true,
      connectedOnce: () => false,
      finished: () => stops.length > 0,
      currentSocket: () => null,
      stop: (code, _ending, detail) => stops.push({ code, detail }),
      finalReason: () => {},
      disconnected: () => {},
    });
    expect(link.nextServer()).toBe(first);
    link.socketError(refused(9));
    link.socketClosed({ code: 1006 });
    // It used to stop here, exit 10, with the second server never asked.
    expect(stops).toEqual([]);
    expect(lines).toEqual([
      `warn cannot reach ${first}: connect ECONNREFUSED 127.0.0.1:9; trying the next server`,
    ]);
    expect(link.nextServer()).toBe(second);
    link.socketError(refused(13));
    expect(stops).toEqual([{ code: EXIT.SERVER_UNREACHABLE, detail: 'connect ECONNREFUSED 127.0.0.1:13' }]);
    expect(lines.at(-1)).toBe(`error cannot reach ${second}: connect ECONNREFUSED 127.0.0.1:13`);
  });
});
