import { describe, expect, it } from 'vitest';
import { ServerClock } from './server-clock.js';

function clockAt(hostNow: number) {
  const said: Array<{ message: string; fields?: Record<string, unknown> }> = [];
  const logger = {
    warn: (message: string, fields?: Record<string, unknown>) => said.push({ message, fields }),
  };
  return { clock: new ServerClock(logger, () => hostNow), said };
}

describe('ServerClock', () => {
  it("follows the host's clock until a server says its time, then the server's", () => {
    const { clock, said } = clockAt(1_000_000);
    expect(clock.now()).toBe(1_000_000);
    clock.observe(1_000_000 + 7 * 60_000, 1_000_000);
    expect(clock.now()).toBe(1_000_000 + 7 * 60_000);
    expect(said).toEqual([
      {
        message: expect.stringMatching(/^this host's clock is 7m behind the server's; .*NTP/),
        fields: { offsetSeconds: 420 },
      },
    ]);
  });

  it('says an offset once, again when it moves by a minute or more, and nothing under a minute', () => {
    const { clock, said } = clockAt(5_000_000);
    clock.observe(5_000_000 + 30_000, 5_000_000); // 30 s: within what NTP-less hosts drift; not said
    clock.observe(5_000_000 - 2 * 3_600_000, 5_000_000);
    clock.observe(5_000_000 - 2 * 3_600_000 + 20_000, 5_000_000); // the same offset, give or take
    clock.observe(5_000_000 - 3 * 3_600_000, 5_000_000);
    expect(said.map((s) => s.message.split(';')[0])).toEqual([
      "this host's clock is 2h ahead of the server's",
      "this host's clock is 3h ahead of the server's",
    ]);
    clock.observe(5_000_000, 5_000_000); // set right: said again if it goes wrong again
    clock.observe(5_000_000 - 3 * 3_600_000, 5_000_000);
    expect(said).toHaveLength(3);
    expect(clock.now()).toBe(5_000_000 - 3 * 3_600_000);
  });
});
