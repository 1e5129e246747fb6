import type { IncomingMessage } from 'node:http';
import type { ErrorReason } from '../shared/errors.js';
import type { Services } from './services/compose.js';
import type { ConsoleFeed } from './sessions/console-changes.js';
import type { AgentSession, SessionHub } from './sessions/hub.js';

export type { Services } from './services/compose.js';

/** One context for HTTP and websocket calls; `agent` is set only on an authenticated websocket. */
export interface Context {
  services: Services;
  /** The live agent sessions: what an agent's calls over its socket go through. */
  hub: SessionHub;
  remoteAddress: string;
  bearerToken: string | null;
  agent: AgentSession | null;
  agentRefusal: ErrorReason | null;
  /**
   * The live feed of changes, on a websocket an admin opened with its key (the console's); absent
   * on HTTP calls and agents' sockets, where `console.changes` is not served.
   */
  consoleChanges?: ConsoleFeed | undefined;
  /**
   * Told when the call's admin key was accepted (HTTP calls): the connection it came on is an
   * admin's from then on, not a stranger's that a newcomer may push out (see ConnectionGuard).
   */
  adminAuthenticated?: (() => void) | undefined;
}

export function bearerTokenOf(req: IncomingMessage): string | null {
  const header = req.headers.authorization;
  if (!header) return null;
  const match = /^Bearer\s+(\S{1,300})$/i.exec(header);
  return match?.[1] ?? null;
}
