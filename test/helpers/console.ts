import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import WebSocket from 'ws';
import type { AppRouter } from '../../shared/router-type.js';
import { arrivals } from './arrivals.js';

export interface ConsoleBatch {
  groups: string[];
  connectors: string[];
  resync: boolean;
}

export interface ConsoleFeed {
  batches: ConsoleBatch[];
  closes: Array<{ code: number; reason: string }>;
  errors: unknown[];
  /** Resolves once the subscription has started (the server took the key). */
  started: Promise<void>;
  /** Resolves with the first batch (from `from` on) that `match` accepts; bounded by `timeoutMs`. */
  waitForBatch(
    match: (batch: ConsoleBatch) => boolean,
    timeoutMs?: number,
    from?: number,
  ): Promise<ConsoleBatch>;
  waitForClose(timeoutMs?: number): Promise<{ code: number; reason: string }>;
  client: ReturnType<typeof createTRPCClient<AppRouter>>;
  close(): Promise<void>;
}

/**
 * Opens `console.changes` as the browser console does: the tRPC client with a wsLink whose first
 * message carries `{adminKey}` as connectionParams. It does not reconnect, so each test sees the
 * server's answer to one handshake. `origin` sets the upgrade's Origin header, as a browser would.
 */
export function openConsole(url: string, adminKey: string, options: { origin?: string } = {}): ConsoleFeed {
  const batches: ConsoleBatch[] = [];
  const closes: Array<{ code: number; reason: string }> = [];
  const errors: unknown[] = [];
  const { notify, until } = arrivals(
    () => `batches=${JSON.stringify(batches)} closes=${JSON.stringify(closes)}`,
  );
  const origin = options.origin;
  const Socket = class extends WebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols, origin ? { headers: { origin } } : {});
    }
  };
  const wsClient = createWSClient({
    url: `${url.replace(/^http/, 'ws')}/trpc`,
    WebSocket: Socket as unknown as typeof globalThis.WebSocket,
    connectionParams: { adminKey },
    retryDelayMs: () => 600_000,
    onClose: (cause) => {
      const c = cause as { code?: number; reason?: unknown };
      closes.push({ code: c?.code ?? 0, reason: String(c?.reason ?? '') });
      notify();
    },
  });
  const client = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient })] });
  let markStarted = () => {};
  const started = new Promise<void>((resolve) => {
    markStarted = resolve;
  });
  const sub = client.console.changes.subscribe(undefined, {
    onStarted: () => markStarted(),
    onData: (batch) => {
      batches.push(batch);
      notify();
    },
    onError: (error) => {
      errors.push(error);
      notify();
    },
  });
  return {
    batches,
    closes,
    errors,
    started,
    client,
    waitForBatch: (match, timeoutMs = 5000, from = 0) =>
      until(() => batches.slice(from).find(match), timeoutMs, 'a matching batch'),
    waitForClose: (timeoutMs = 5000) => until(() => closes[0], timeoutMs, 'close'),
    close: async () => {
      sub.unsubscribe();
      await wsClient.close();
    },
  };
}
