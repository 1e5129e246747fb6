import type { WebSocket } from 'ws';
import type { SessionEvent } from '../../shared/protocol.js';
import type { IssuedIdentity } from '../services/identity.js';

/** An agent whose identity and proof checked out; lives in the websocket's tRPC context. */
export interface AgentSession {
  connectorId: string;
  groupId: string;
  provisioningKeyId: string;
  jkt: string;
  identityIssuedAt: number;
  identityExpiresAt: number;
  /** The kid of the key that signed the identity the session now holds. */
  identityKeyId: string;
  remoteAddress: string;
  ws: WebSocket;
  /** The socket under `ws`, when known: writes to it can be gathered into one (see `inSlices`). */
  socket: Corkable | null;
}

/** A stream whose writes can be held and then sent together (net.Socket). */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

interface Ending {
  code: number;
  reason: string;
  requestedAt: number;
}

/** The server's end of one live session: a small queue the subscription drains. */
export class LiveSession {
  // Made on the first push: most sessions never get one, and there are tens of thousands of them.
  private queue: SessionEvent[] | null = null;
  private wake: (() => void) | null = null;
  ending: Ending | null = null;
  connectedAt: number;
  /** The registry's number for it, set when it becomes its connector's session (0 until then). */
  sessionId = 0;
  /** Whether `agent.session` was subscribed on this socket: until then nothing drains the queue. */
  subscribed = false;
  /** Closes the socket if it does not subscribe in time (cleared when it does). */
  subscribeDeadline: NodeJS.Timeout | undefined = undefined;
  /**
   * When an identity signed by a key other than the active one is renewed: a random time within
   * the rotation spread from when the hub first saw it so (null while the active key signed it).
   */
  rotationDueAt: number | null = null;
  /** The renewal under way (signing is asynchronous): calls meanwhile get its identity, not one each. */
  renewing: Promise<IssuedIdentity> | null = null;

  constructor(
    readonly agent: AgentSession,
    now: number,
  ) {
    this.connectedAt = now;
  }

  push(event: SessionEvent): void {
    if (this.ending) return;
    this.enqueue(event);
    this.wake?.();
  }

  private enqueue(event: SessionEvent): void {
    if (this.queue) this.queue.push(event);
    else this.queue = [event];
  }

  /** Sends `event` (if any) as the last thing on the socket, then closes it with `code`. */
  end(event: SessionEvent | null, code: number, reason: string, now: number): void {
    if (this.ending) return;
    if (event) this.enqueue(event);
    this.ending = { code, reason, requestedAt: now };
    this.wake?.();
  }

  async next(signal: AbortSignal): Promise<SessionEvent | null> {
    while (!this.queue?.length) {
      if (this.ending || signal.aborted) return null;
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener('abort', done);
          this.wake = null;
          resolve();
        };
        this.wake = done;
        signal.addEventListener('abort', done);
      });
    }
    return this.queue?.shift() ?? null;
  }
}
