import { escapeUnsafe } from '../shared/text.js';

/** One line per state change: readable by default, JSON lines with --log-json. */
export interface AgentLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export function createLogger(
  format: 'text' | 'json',
  out: (line: string) => void = writeToStderr,
): AgentLogger {
  const write = (level: string, message: string, fields: Record<string, unknown> = {}) => {
    const time = new Date().toISOString();
    if (format === 'json') {
      out(JSON.stringify({ time, level, msg: message, ...fields }));
      return;
    }
    const extra = Object.entries(fields)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    // One line, whatever a server put in what is said (a revoke's reason, a close reason, an error's
    // message): a newline in it forged log lines, an escape sequence rewrote the reader's terminal.
    out(escapeUnsafe(`${time} ${level.padEnd(5)} ${message}${extra ? `  (${extra})` : ''}`));
  };
  return {
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}

/** A log line to stderr, while someone reads it: an agent whose log pipe closed keeps running. */
function writeToStderr(line: string): void {
  if (!process.stderr.destroyed) process.stderr.write(`${line}\n`);
}

/**
 * The agent runs for months: the reader of its log going away (a closed pipe, `| head`) must not
 * end it. EPIPE on stderr is an unhandled 'error' event otherwise: exit 1, mid-session.
 */
export function keepRunningWhenStderrCloses(): void {
  process.stderr.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'ERR_STREAM_DESTROYED') throw error;
  });
}
