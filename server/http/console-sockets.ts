import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { DomainError } from '../../shared/errors.js';
import { CLOSE_CODES } from '../../shared/protocol.js';
import type { Context, Services } from '../context.js';
import type { Metrics } from '../metrics.js';
import { authenticateAdmin } from '../services/admin-auth.js';
import { closeWithin } from '../sessions/closing.js';
import type { ConsoleBatch, ConsoleChanges, ConsoleFeed } from '../sessions/console-changes.js';
import type { SessionHub } from '../sessions/hub.js';
import type { ChangedRecord } from '../store/observed-store.js';
import type { ClientAddressOf } from './client-address.js';

/**
 * Websockets one admin API key may hold open at once: a console tab holds one, so this leaves room
 * for an admin's tabs and browsers while one leaked key cannot hold thousands of sockets.
 */
export const MAX_CONSOLE_SOCKETS_PER_KEY = 16;

/**
 * `console.changes` subscriptions one socket may hold at once: the console holds one. Without a
 * bound a read-only key could subscribe over and over on one socket (~12 KB each) until the
 * server ran out of memory.
 */
export const MAX_FEEDS_PER_CONSOLE_SOCKET = 4;

/** How often sockets are checked for a key that expired while they were open. */
const EXPIRY_CHECK_MS = 1000;

/** The `adminKey` of a socket's connectionParams, if it is an admin's (the console's) socket. */
export function adminKeyOf(connectionParams: unknown): string | null | undefined {
  if (typeof connectionParams !== 'object' || connectionParams === null) return undefined;
  if (!('adminKey' in connectionParams)) return undefined;
  const key = (connectionParams as { adminKey: unknown }).adminKey;
  return typeof key === 'string' ? key : null;
}

export interface ConsoleSocketsOptions {
  services: Services;
  hub: SessionHub;
  changes: ConsoleChanges;
  metrics: Pick<Metrics, 'consoleSockets'>;
  logger: Logger;
  /** Who a request comes from (the TCP peer, or behind a trusted proxy its X-Forwarded-For). */
  clientAddressOf: ClientAddressOf;
  /** @default MAX_CONSOLE_SOCKETS_PER_KEY */
  maxPerKey?: number | undefined;
}

/**
 * The admins' websockets on the agents' endpoint (the console's live feed). An admin names its API
 * key in the first message (`connectionParams.adminKey`); read and admin scopes are let in, anything
 * else is refused as a failed admin call is (same rate limit, same audit). These sockets are no
 * agent session: the hub, the per-address session cap and the session metrics never see them. They
 * are closed (4001 `ADMIN_KEY_INVALID deleted|expired`) once their key is deleted or expires.
 */
export class ConsoleSockets {
  private readonly byKey = new Map<string, Set<WebSocket>>();
  private readonly maxPerKey: number;
  private readonly expiryTimer: NodeJS.Timeout;

  constructor(private readonly o: ConsoleSocketsOptions) {
    this.maxPerKey = o.maxPerKey ?? MAX_CONSOLE_SOCKETS_PER_KEY;
    this.expiryTimer = setInterval(() => this.closeEnded('expired'), EXPIRY_CHECK_MS);
    this.expiryTimer.unref();
  }

  /** Open admin sockets, all keys together. */
  get size(): number {
    let count = 0;
    for (const sockets of this.byKey.values()) count += sockets.size;
    return count;
  }

  /**
   * The context of a socket whose first message names an admin key, or (the socket then closed with
   * 4001 and the reason, or 4429 when rate-limited) of one refused.
   */
  async authenticate(req: IncomingMessage, ws: WebSocket, adminKey: string | null): Promise<Context> {
    const { services, hub } = this.o;
    const remoteAddress = this.o.clientAddressOf(req);
    const base = { services, hub, remoteAddress, agent: null, agentRefusal: 'IDENTITY_INVALID' as const };
    let apiKeyId: string;
    try {
      apiKeyId = (await authenticateAdmin(services, adminKey, remoteAddress, 'console.changes')).apiKeyId;
    } catch (refusal) {
      if (!(refusal instanceof DomainError && ['ADMIN_KEY_INVALID', 'RATE_LIMITED'].includes(refusal.reason)))
        throw refusal;
      const retryAfter = refusal.details.retryAfterSeconds;
      if (refusal.reason === 'RATE_LIMITED')
        closeWithin(ws, CLOSE_CODES.RATE_LIMITED, `RATE_LIMITED retry-after=${retryAfter ?? 1}`);
      else closeWithin(ws, CLOSE_CODES.REFUSED, refusal.reason);
      return { ...base, bearerToken: null };
    }
    const sockets = this.byKey.get(apiKeyId) ?? new Set<WebSocket>();
    if (sockets.size >= this.maxPerKey) {
      closeWithin(ws, CLOSE_CODES.RATE_LIMITED, 'RATE_LIMITED too many console sockets for this API key');
      return { ...base, bearerToken: null };
    }
    // It closed while being authenticated: no close event will come to remove it.
    if (ws.readyState !== ws.OPEN) return { ...base, bearerToken: null };
    sockets.add(ws);
    this.byKey.set(apiKeyId, sockets);
    this.o.metrics.consoleSockets.inc();
    ws.once('close', () => {
      this.o.metrics.consoleSockets.dec();
      sockets.delete(ws);
      if (sockets.size === 0 && this.byKey.get(apiKeyId) === sockets) this.byKey.delete(apiKeyId);
    });
    // Every call over the socket authenticates again with this key (adminProcedure).
    return { ...base, bearerToken: adminKey, consoleChanges: boundedFeed(this.o.changes) };
  }

  /** Records changed: an admin key deleted (here or on another replica) closes its sockets at once. */
  recordsChanged(changes: readonly ChangedRecord[]): void {
    if (changes.some((change) => change.section === 'apiKeys' && this.byKey.has(change.id)))
      this.closeEnded('deleted');
  }

  /**
   * Closes the sockets of keys that ended since they authenticated: `deleted` when the store says a
   * key changed (every deletion is announced, here or from another replica), `expired` on the
   * timer (an expiry is announced by nothing).
   */
  private closeEnded(looking: 'deleted' | 'expired'): void {
    for (const [apiKeyId, sockets] of this.byKey) {
      const standing = this.o.services.apiKeys.standing(apiKeyId);
      if (standing === 'active' || (looking === 'expired' && standing !== 'expired')) continue;
      this.byKey.delete(apiKeyId);
      for (const ws of sockets) closeWithin(ws, CLOSE_CODES.REFUSED, `ADMIN_KEY_INVALID ${standing}`);
      this.o.logger.info(
        { apiKeyId, sockets: sockets.size, standing },
        'closed console sockets of an ended key',
      );
    }
  }

  /** Closes every admin socket (server shutdown; the console reconnects to the next server). */
  closeAll(): void {
    clearInterval(this.expiryTimer);
    for (const sockets of this.byKey.values())
      for (const ws of sockets) ws.close(1001, 'server shutting down');
    this.byKey.clear();
  }
}

/**
 * The feed as one socket sees it: at most MAX_FEEDS_PER_CONSOLE_SOCKET subscriptions open at once.
 * Refused when asked, not at the first batch: tRPC says `started` before it reads the stream.
 */
function boundedFeed(changes: ConsoleChanges): ConsoleFeed {
  let open = 0;
  return {
    stream(signal: AbortSignal): AsyncGenerator<ConsoleBatch> {
      if (open >= MAX_FEEDS_PER_CONSOLE_SOCKET)
        throw new DomainError(
          'BAD_REQUEST',
          `This socket already has ${MAX_FEEDS_PER_CONSOLE_SOCKET} console.changes subscriptions open: one is enough (each gets every batch).`,
        );
      open++;
      let counted = true;
      const done = () => {
        if (counted) open--;
        counted = false;
      };
      // The subscription's signal aborts when it is stopped or its socket closes, read or not.
      signal.addEventListener('abort', done, { once: true });
      return (async function* () {
        try {
          yield* changes.stream(signal);
        } finally {
          done();
        }
      })();
    },
  };
}
