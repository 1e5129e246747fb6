import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
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

export type LiveState = 'connecting' | 'live' | 'offline';

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
  const wsClient = createWSClient({
    url: `${scheme}://${location.host}/trpc`,
    connectionParams: () => ({ adminKey }),
    onClose: () => onState('offline'),
  });
  const client = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient })] });
  onState('connecting');
  const subscription = client.console.changes.subscribe(undefined, {
    onStarted: () => {
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
