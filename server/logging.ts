import pino, { type DestinationStream, type Logger } from 'pino';

export type LogFormat = 'text' | 'json';

/** Text for people at a terminal, JSON lines (pino's) for a log collector: the default follows stdout. */
export function defaultLogFormat(stdout: { isTTY?: boolean } = process.stdout): LogFormat {
  return stdout.isTTY ? 'text' : 'json';
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

/** Fields every line has, or that the text line shows in its own place. */
const SHOWN_APART = new Set(['level', 'time', 'msg', 'service', 'pid', 'hostname']);

function fieldText(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (value && typeof value === 'object' && 'message' in value && 'type' in value) {
    // An error pino serialized: its type and message (the stack stays in JSON logs).
    const error = value as { type: string; message: string };
    return JSON.stringify(`${error.type}: ${error.message}`);
  }
  return JSON.stringify(value);
}

/**
 * One pino JSON line as `2026-12-02 01:02:03.456Z INFO  message key=value …`: readable times
 * instead of epoch milliseconds, the fields after the message.
 */
export function textLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const time = typeof entry.time === 'number' ? new Date(entry.time).toISOString().replace('T', ' ') : '';
  const level = (LEVEL_NAMES[entry.level as number] ?? String(entry.level)).padEnd(5);
  const fields = Object.entries(entry)
    .filter(([key]) => !SHOWN_APART.has(key))
    .map(([key, value]) => `${key}=${fieldText(value)}`);
  return `${[time, level, String(entry.msg ?? ''), ...fields].filter(Boolean).join(' ')}\n`;
}

/** A pino destination that writes `textLine`s to `out` (synchronously, as pino's own stdout does). */
export function textDestination(out: { write(text: string): unknown } = process.stdout): DestinationStream {
  return { write: (line: string) => void out.write(textLine(line)) };
}

/** The server's logger: level and format from the config; the Authorization header never logged. */
export function createServerLogger(level: string, format: LogFormat): Logger {
  const options = {
    level,
    base: { service: 'connector-server' },
    redact: ['req.headers.authorization'],
  };
  return format === 'text' ? pino(options, textDestination()) : pino(options);
}
