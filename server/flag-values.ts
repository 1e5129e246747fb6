/**
 * How the values of `serve`'s flags (and the admin commands' parsed flags) are read from their text:
 * each parser throws the flag's error message, which `parsedFlag` turns into a schema issue.
 */
import { z } from 'zod';
import { DAY_MS, parseDuration } from '../shared/durations.js';
import { parseListenAddress } from './http/endpoints.js';
import { MAX_FEED_MAX_AGE_MS, MIN_FEED_MAX_AGE_MS } from './store/postgres/feed-retention.js';

// Parsed in shared/ since procedure inputs (a key's ttl) take the same durations; re-exported for the CLIs.
export { parseDuration };

/**
 * A flag's text turned into a value by `parse`; what `parse` throws is the flag's error message. The
 * rule for every parsed flag, `serve`'s and the admin commands' alike.
 */
export function parsedFlag<T>(parse: (text: string) => T) {
  return z.string().transform((text, ctx) => {
    try {
      return parse(text);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  });
}

/** `90s`, `15m`, `12h`, `14d` in milliseconds. */
export const durationFlag = parsedFlag(parseDuration);

const BYTE_UNITS: Record<string, number> = {
  '': 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Parses `1048576`, `512KiB`, `64MiB`, `1GiB` (also `k`, `m`, `g`: powers of 1024) into bytes. */
export function parseByteSize(text: string): number {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(text.trim());
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined)
    throw new Error(`"${text}" is not a size: use bytes or a number with KiB, MiB or GiB, e.g. 64MiB`);
  const value = Number(match[1]) * unit;
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`"${text}" must be a positive size`);
  return value;
}

export const byteSize = parsedFlag(parseByteSize);
export const listenAddress = parsedFlag(parseListenAddress);

/**
 * A whole-number flag from `min` to `max`, whose errors say what it takes ("must be a whole number
 * from 1 to 1000"), not the schema's words ("Too big: expected number to be <=1000", "received NaN").
 */
export function wholeNumber(min: number, max: number = Number.MAX_SAFE_INTEGER, extra = '') {
  const range = max === Number.MAX_SAFE_INTEGER ? `(${min} or more)` : `from ${min} to ${max}`;
  const error = `must be a whole number ${range}${extra}`;
  return z.coerce.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

/** The origin of a public URL, or null when it is no http(s) URL with a host. */
export function publicOriginOf(text: string): string | null {
  try {
    const url = new URL(text);
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !url.hostname) return null;
    if (url.username || url.password || url.search || url.hash) return null;
    return url.origin;
  } catch {
    return null;
  }
}

/**
 * How long the change feed keeps a row some replica has not read: from 5 minutes (a replica restarting
 * must find the rows it missed) to 7 days (the table holds every change of that time).
 */
export function parseFeedMaxAge(text: string): number {
  const ms = parseDuration(text);
  if (ms < MIN_FEED_MAX_AGE_MS || ms > MAX_FEED_MAX_AGE_MS)
    throw new Error(
      `"${text}" is outside 5m..7d (how long a replica may be away and still catch up from the feed)`,
    );
  return ms;
}

/**
 * `forever` (null: keep every event) or a duration of at least a day: `6m` is six minutes, and a
 * typo there would empty the audit table within the hour.
 */
export function parseAuditRetention(text: string): number | null {
  if (text.trim() === 'forever') return null;
  const retentionMs = parseDuration(text);
  if (retentionMs < DAY_MS)
    throw new Error(`"${text}" is under a day (m is minutes): use days, e.g. 400d, or forever`);
  return retentionMs;
}

/** The sslmode values the PostgreSQL client (pg) knows. */
const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'];

/**
 * Checks a PostgreSQL URL without echoing it (it may carry a password): postgres:// or
 * postgresql://, with a host. Returns it unchanged.
 */
export function parseDatabaseUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    // Most often a password's own / ? # (or : in the user) cut the URL short: say how to write them.
    throw new Error(
      text.includes('@')
        ? 'not a URL: use postgres://USER:PASSWORD@HOST:5432/DATABASE, with any / ? # @ : in the user or password percent-encoded (%2F %3F %23 %40 %3A)'
        : 'not a URL: use postgres://USER:PASSWORD@HOST:5432/DATABASE',
    );
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:')
    throw new Error(`use a postgres:// URL (got ${url.protocol}//…)`);
  if (!url.hostname)
    throw new Error('the URL names no host: use postgres://USER:PASSWORD@HOST:5432/DATABASE');
  // Without one, PostgreSQL picks the user's name (often `postgres`, the maintenance database): the
  // server would make its tables there, and a data dir's admin.key would be replaced by a new one's.
  if (url.pathname === '' || url.pathname === '/')
    throw new Error(
      'the URL names no database: end it with /DATABASE, a database of its own (createdb connector)',
    );
  // The client takes any other sslmode as "use TLS", so a typo would end in a TLS error that says
  // nothing of it (or a connection encrypted where `disable` was meant).
  const sslmode = url.searchParams.get('sslmode');
  if (sslmode !== null && !SSL_MODES.includes(sslmode))
    throw new Error(`sslmode=${sslmode} is not one of ${SSL_MODES.join(', ')}`);
  return text;
}
