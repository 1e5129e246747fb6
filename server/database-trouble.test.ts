import pg from 'pg';
import { describe, expect, it } from 'vitest';
import {
  DatabaseTrouble,
  isDatabaseError,
  QUIET_BEFORE_RECOVERED_MS,
  REPEAT_LOG_MS,
} from './database-trouble.js';

function recorder() {
  const lines: Array<{ level: string; details: Record<string, unknown>; message: string }> = [];
  const at = (level: string) => (details: Record<string, unknown>, message: string) =>
    lines.push({ level, details, message });
  return { lines, logger: { error: at('error'), warn: at('warn'), info: at('info') } };
}

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432\n    at TCPConnectWrap'), {
  code: 'ECONNREFUSED',
});

describe('DatabaseTrouble', () => {
  it('an outage is one error, then a line a minute with the latest failure and the count, and one line when it ends', () => {
    let now = 0;
    const { lines, logger } = recorder();
    const trouble = new DatabaseTrouble(logger as never, () => now);
    // The feed every second, the heartbeat every 5 s, for two and a half minutes.
    for (now = 0; now < 150_000; now += 1000) {
      trouble.failed('change feed: read or listener failed', refused);
      if (now % 5000 === 0) trouble.failed('cluster sessions: a statement or the listener failed', refused);
    }
    expect(lines.map((l) => [l.level, l.message])).toEqual([
      ['error', expect.stringContaining('PostgreSQL cannot be used')],
      ['warn', 'PostgreSQL still failing'],
      ['warn', 'PostgreSQL still failing'],
    ]);
    expect(lines[0]!.details).toEqual({
      what: 'change feed: read or listener failed',
      code: 'ECONNREFUSED',
      reason: 'connect ECONNREFUSED 127.0.0.1:5432',
    });
    expect(lines[1]!.details).toMatchObject({ forSeconds: REPEAT_LOG_MS / 1000, failures: 61 + 12 });
    expect(trouble.cause).toBe('ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:5432');
    // Answers again: only once nothing failed for the quiet period.
    trouble.answered();
    expect(lines).toHaveLength(3);
    now += QUIET_BEFORE_RECOVERED_MS;
    trouble.answered();
    expect(lines.at(-1)).toMatchObject({
      level: 'info',
      message: 'PostgreSQL answers again',
      // The failures ran from 0 to 149 s; the quiet period that ended the trouble is not counted.
      details: { forSeconds: 149, failures: 150 + 30, quietForSeconds: QUIET_BEFORE_RECOVERED_MS / 1000 + 1 },
    });
    expect(trouble.cause).toBeNull();
    trouble.answered();
    expect(lines).toHaveLength(4);
    // The next outage starts with an error again.
    trouble.failed('store commit failed', refused);
    expect(lines.at(-1)).toMatchObject({ level: 'error', details: { what: 'store commit failed' } });
  });

  it('tells database failures from the code’s own', () => {
    expect(isDatabaseError(refused)).toBe(true);
    expect(isDatabaseError(new pg.DatabaseError('permission denied for table replicas', 0, 'error'))).toBe(
      true,
    );
    expect(isDatabaseError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isDatabaseError(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBe(false);
  });
});
