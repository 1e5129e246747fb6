import type { WebSocket } from 'ws';

/**
 * How long a socket the server closes is given to answer the close frame before it is cut. The `ws`
 * library waits 30 s for that answer; a peer that never sends it kept the connection, counted as a
 * stranger's against the unauthenticated limits and never evicted (it is past its headers), for 30
 * to 40 s after a refusal or a handshake deadline: a few addresses doing so could hold every
 * unauthenticated slot, and the admin API, /healthz and new agents were answered 503 meanwhile. An
 * agent reads the close code as soon as the frame arrives, well within this.
 */
export const CLOSE_ANSWER_MS = 2000;

/**
 * Closes `ws` with `code` and `reason`, and cuts the connection if the peer has not answered the
 * close frame within CLOSE_ANSWER_MS. For sockets the server turns away (refused, too slow to
 * authenticate or subscribe); a live session's ordinary close goes through the ws close handshake.
 */
export function closeWithin(ws: WebSocket, code: number, reason: string, answerMs = CLOSE_ANSWER_MS): void {
  ws.close(code, reason);
  if (ws.readyState === ws.CLOSED) return;
  const cut = setTimeout(() => ws.terminate(), answerMs);
  cut.unref();
  ws.once('close', () => clearTimeout(cut));
}
