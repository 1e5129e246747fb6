import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { parseServeConfig } from './config.js';
import { defaultLogFormat, textDestination, textLine } from './logging.js';

describe('server log format', () => {
  it('text: a readable UTC time, the level, the message, then key=value fields (strings quoted when needed)', () => {
    const lines: string[] = [];
    const logger = pino(
      { base: { service: 'connector-server' } },
      textDestination({ write: (t) => lines.push(t) }),
    );
    logger.info({ url: 'http://127.0.0.1:7420', note: 'two words', n: 3 }, 'enrollment server listening');
    logger.error({ err: new Error('disk full') }, 'store write failed');
    expect(lines[0]).toMatch(
      /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z INFO {2}enrollment server listening url=http:\/\/127\.0\.0\.1:7420 note="two words" n=3\n$/,
    );
    expect(lines[1]).toMatch(/ ERROR store write failed err="Error: disk full"\n$/);
    expect(lines.join('')).not.toContain('service=');
    // Not JSON (never from pino, but never lost either): passed through as it is.
    expect(textLine('plain')).toBe('plain\n');
  });

  it('defaults to text on a terminal and JSON otherwise; --log-format and CONNECTOR_LOG_FORMAT choose', () => {
    expect(defaultLogFormat({ isTTY: true })).toBe('text');
    expect(defaultLogFormat({ isTTY: false })).toBe('json');
    expect(parseServeConfig({ logFormat: 'text' }, {}).logFormat).toBe('text');
    expect(parseServeConfig({}, { CONNECTOR_LOG_FORMAT: 'json' }).logFormat).toBe('json');
    expect(() => parseServeConfig({ logFormat: 'yaml' }, {})).toThrow(/--log-format/);
  });
});
