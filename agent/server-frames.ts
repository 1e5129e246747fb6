// What a server may send the agent over its session's websocket. tRPC's client parses every text
// message as JSON inside a callback that rethrows on a timer: one message that is not a JSON object
// (plain text, `null`, a binary frame) from a broken server, or from anyone who can write on a plain
// http:// link, was an uncaught exception that ended the agent with a stack trace, at every
// reconnect. And nothing bounded how big or how many: ws reads messages of up to 100 MiB, and each
// status event is a durable write of status.json and a log line.

/**
 * The largest message the agent reads from a server (ws's maxPayload). A genuine one is well under
 * 8 KiB (an identity event holds one token, which the server refuses past 8,192 characters).
 */
export const MAX_SERVER_MESSAGE_BYTES = 64 * 1024;
/** Messages a server may send over one socket within SERVER_MESSAGE_WINDOW_MS (a genuine one sends a handful an hour). */
export const MAX_SERVER_MESSAGES = 100;
export const SERVER_MESSAGE_WINDOW_MS = 10_000;
/** The close code the agent hangs up with on a server that broke the protocol (RFC 6455: policy violation). */
export const PROTOCOL_VIOLATION_CLOSE = 1008;

/** Why a message of the server is not one the agent reads, or null when it is. */
export function unreadableMessage(data: unknown, isBinary: boolean): string | null {
  if (isBinary) return 'a binary message';
  const text = Buffer.isBuffer(data) ? data.toString('utf8') : String(data);
  // tRPC's own keep-alive.
  if (text === 'PING' || text === 'PONG') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return 'a message that is not JSON';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    return 'a JSON message that is not an object';
  return null;
}

/** Counts a socket's messages in fixed windows: false once past `max` within one. */
export class MessageBudget {
  private windowStart = Number.NEGATIVE_INFINITY;
  private count = 0;

  constructor(
    private readonly max = MAX_SERVER_MESSAGES,
    private readonly windowMs = SERVER_MESSAGE_WINDOW_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** One more message: whether it is within the budget. */
  take(): boolean {
    const now = this.now();
    if (now - this.windowStart >= this.windowMs || now < this.windowStart) {
      this.windowStart = now;
      this.count = 0;
    }
    this.count++;
    return this.count <= this.max;
  }
}

const violations = new WeakMap<object, string>();

/** Notes that the server of `socket` broke the protocol, and how; the first one counts. */
export function noteViolation(socket: object, problem: string): void {
  if (!violations.has(socket)) violations.set(socket, problem);
}

/** How the server of `socket` (a close or error event's target) broke the protocol, if it did. */
export function violationOf(socket: unknown): string | null {
  if (!socket || typeof socket !== 'object') return null;
  return violations.get(socket) ?? null;
}
