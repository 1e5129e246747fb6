import { describe, expect, it } from 'vitest';
import { ThrottledLines } from './throttled-lines.js';

describe('ThrottledLines', () => {
  it('one line per kind per interval; the held ones are said once the interval is over, counted', async () => {
    const lines: Array<[string, number]> = [];
    const throttled = new ThrottledLines(100);
    for (let i = 0; i < 50; i++) throttled.say('refused', (count) => lines.push([`refused #${i}`, count]));
    throttled.say('other', (count) => lines.push(['other', count]));
    expect(lines).toEqual([
      ['refused #0', 1],
      ['other', 1],
    ]);
    // The tail of the burst, without waiting for the next event of its kind.
    await new Promise((resolve) => setTimeout(resolve, 250));
    expect(lines).toEqual([
      ['refused #0', 1],
      ['other', 1],
      ['refused #49', 49],
    ]);
    throttled.close();
  });
});
