import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { CLOSE_CODES } from '../../shared/protocol.js';
import type { AppRouter } from '../../shared/router-type.js';

/**
 * One batch from the server's `console.changes` subscription: the ids whose state changed since the
 * last batch (the server coalesces), or `resync` when it lost track and everything shown is stale.
 */
export interface ConsoleChanges {
  groups: string[];
  connectors: string[];
  resync: boolean;
}

/** `crowded`: the server refused the feed because this key has too many consoles open (its tabs). */
export type LiveState = 'connecting' | 'live' | 'offline' | 'crowded';

/** After a live feed drops, waits stay this short for RECENTLY_LIVE_MS: a restart is over in seconds. */
const RECENT_CEILING_MS = 3_000;
/** How long after the feed was last live a server counts as just restarting, not gone. */
export const RECENTLY_LIVE_MS = 5 * 60_000;
/** The least time between two retries the page makes at once (focus, visibility, online). */
const PROMPT_RETRY_GAP_MS = 2_000;

/**
 * Waits before reconnecting: doubling from 1 s to 30 s (half of it random) while the feed does not
 * start. tRPC's own backoff restarts at every open, and a server that refuses the feed right after
 * opening (a key's 17th tab) then saw ~40 sockets a second from that tab. `recentlyLive`: the feed
 * ran less than RECENTLY_LIVE_MS ago and was not refused: a server restarting, where waits of up to
 * 30 s kept the page "Live updates off" for 10–25 s after the server was back; they stop at 3 s.
 */
export function reconnectDelayMs(
  failures: number,
  { recentlyLive = false, random = Math.random }: { recentlyLive?: boolean; random?: () => number } = {},
): number {
  const ceiling = Math.min(recentlyLive ? RECENT_CEILING_MS : 30_000, 1000 * 2 ** Math.min(failures, 5));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** The feed of one page: `reconnectNow` opens a new socket at once when it is not live (Reconnect now). */
export interface ChangesFeed {
  reconnectNow(): void;
  stop(): void;
}

/**
 * Subscribes to the server's changes over the agents' websocket endpoint, the admin key sent in the
 * first message (connectionParams), never in the URL. Reconnects by itself, and at once when the
 * page is shown or focused again or the browser goes online; after each (re)start the caller gets
 * `resync`, since changes made while it was away were missed.
 */
export function subscribeToChanges(
  adminKey: string,
  onBatch: (batch: ConsoleChanges) => void,
  onState: (state: LiveState) => void,
): ChangesFeed {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  // Closes since the feed last started: the reconnect delay grows with them.
  let failures = 0;
  let state: LiveState = 'connecting';
  /** When the feed last ran (Date.now()); null before it first started. */
  let liveAt: number | null = null;
  let lastPromptRetry = 0;
  /** The wait before a new client, when the server ended the feed on an open socket. */
  let retry: ReturnType<typeof setTimeout> | undefined;
  const setState = (next: LiveState) => {
    state = next;
    onState(next);
  };
  const recentlyLive = () =>
    state !== 'crowded' && (state === 'live' || (liveAt !== null && Date.now() - liveAt < RECENTLY_LIVE_MS));

  /** A client of its own per start: tRPC's wait before a retry cannot be cut short. */
  const start = () => {
    let current = true;
    const wsClient = createWSClient({
      url: `${scheme}://${location.host}/trpc`,
      connectionParams: () => ({ adminKey }),
      retryDelayMs: () => reconnectDelayMs(failures, { recentlyLive: recentlyLive() }),
      onClose: (cause) => {
        if (!current) return;
        failures++;
        if (state === 'live') liveAt = Date.now();
        setState(cause?.code === CLOSE_CODES.RATE_LIMITED ? 'crowded' : 'offline');
      },
    });
    const client = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient })] });
    /** The subscription ended while this client is the page's (an error comes with its end: once). */
    const ended = () => {
      if (!current) return;
      current = false;
      failures++;
      if (state === 'live') liveAt = Date.now();
      setState('offline');
      retry = setTimeout(restart, reconnectDelayMs(failures, { recentlyLive: recentlyLive() }));
    };
    const subscription = client.console.changes.subscribe(undefined, {
      onStarted: () => {
        if (!current) return;
        failures = 0;
        liveAt = Date.now();
        setState('live');
        onBatch({ groups: [], connectors: [], resync: true });
      },
      onData: (batch) => {
        if (current) onBatch(batch);
      },
      // The server answered the subscription with an error on a socket that stays open (or ended it):
      // tRPC then neither reconnects nor subscribes again, and the page stayed "Live updates off"
      // until Reconnect now. It starts again itself, on the backoff of a lost socket.
      onError: ended,
      onComplete: ended,
    });
    return () => {
      current = false;
      subscription.unsubscribe();
      void wsClient.close();
    };
  };

  setState('connecting');
  let stopClient = start();
  /** A new client, in place of one whose feed ended or that waits to reconnect. */
  function restart() {
    clearTimeout(retry);
    retry = undefined;
    stopClient();
    setState('connecting');
    stopClient = start();
  }
  const reconnectNow = () => {
    if (state === 'live' || state === 'connecting') return;
    lastPromptRetry = Date.now();
    restart();
  };
  // Back to the page, or the network back: the server may well be too, so ask now, not after the wait.
  const promptly = () => {
    if (document.visibilityState !== 'visible' || state !== 'offline') return;
    if (Date.now() - lastPromptRetry >= PROMPT_RETRY_GAP_MS) reconnectNow();
  };
  document.addEventListener('visibilitychange', promptly);
  window.addEventListener('focus', promptly);
  window.addEventListener('online', promptly);
  return {
    reconnectNow,
    stop: () => {
      document.removeEventListener('visibilitychange', promptly);
      window.removeEventListener('focus', promptly);
      window.removeEventListener('online', promptly);
      clearTimeout(retry);
      stopClient();
    },
  };
}
