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

/**
 * Waits before reconnecting: doubling from 1 s to 30 s (half of it random) while the feed does not
 * start. tRPC's own backoff restarts at every open, and a server that refuses the feed right after
 * opening (a key's 17th tab) then saw ~40 sockets a second from that tab.
 */
export function reconnectDelayMs(failures: number, random: () => number = Math.random): number {
  const ceiling = Math.min(30_000, 1000 * 2 ** Math.min(failures, 5));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * Subscribes to the server's changes over the agents' websocket endpoint, the admin key sent in the
 * first message (connectionParams), never in the URL. Reconnects by itself; after each (re)start the
 * caller gets `resync`, since changes made while it was away were missed.
 */
export function subscribeToChanges(
  adminKey: string,
  onBatch: (batch: ConsoleChanges) => void,
  onState: (state: LiveState) => void,
): () => void {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  // Closes since the feed last started: the reconnect delay grows with them.
  let failures = 0;
  const wsClient = createWSClient({
    url: `${scheme}://${location.host}/trpc`,
    connectionParams: () => ({ adminKey }),
    retryDelayMs: () => reconnectDelayMs(failures),
    onClose: (cause) => {
      failures++;
      onState(cause?.code === CLOSE_CODES.RATE_LIMITED ? 'crowded' : 'offline');
    },
  });
  const client = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient })] });
  onState('connecting');
  const subscription = client.console.changes.subscribe(undefined, {
    onStarted: () => {
      failures = 0;
      onState('live');
      onBatch({ groups: [], connectors: [], resync: true });
    },
    onData: onBatch,
    onError: () => onState('offline'),
  });
  return () => {
    subscription.unsubscribe();
    wsClient.close();
  };
}
