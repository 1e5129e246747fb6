import { createTRPCClient, createWSClient, TRPCClientError, wsLink } from '@trpc/client';
import { type ErrorReason, isErrorReason } from '../shared/errors.js';
import { FINAL_SESSION_REASONS, type SessionEvent, TERMINATION_ACK_TIMEOUT_MS } from '../shared/protocol.js';
import type { AppRouter } from '../shared/router-type.js';
import type { HostFacts } from '../shared/schemas.js';
import { EXIT } from './exit-codes.js';
import { HostReporter } from './host-reporter.js';
import { claimsOf, identityProblem, UnusableIdentity } from './identity-check.js';
import { IdentityKeeper } from './identity-keeper.js';
import { IdentitySaver } from './identity-saver.js';
import { type AgentStatus, type IdentityStore, type SavedIdentity, serversOf } from './identity-store.js';
import type { AgentLogger } from './log.js';
import { createProof, thumbprintOf } from './proof.js';
import { createRenewalTimer, type RenewableIdentity } from './renewal.js';
import { ServerClock } from './server-clock.js';
import { ServerRotation } from './servers.js';
import { parseSessionEvent } from './session-events.js';
import { SessionLink } from './session-link.js';
import { SessionSocket } from './session-socket.js';
import { cannotWrite } from './state-dir-problems.js';
import { serverTimeOf, sessionNonceOf, type Transport, withSessionNonce } from './transport.js';
import { wipeIdentity } from './wipe-identity.js';

export { EXIT };

export interface SessionOptions {
  identity: SavedIdentity;
  store: IdentityStore;
  transport: Transport;
  logger: AgentLogger;
  signal: AbortSignal;
  /**
   * The servers to connect to: those given with --server, which run.ts has checked are all ones
   * the identity was issued for (an operator naming one of them means that one). @default all of
   * the identity's servers
   */
  servers?: readonly string[];
  /** Facts collected before connecting; on every (re)connect they are sent if the server holds others. */
  hostFacts: HostFacts;
  /** How often host facts are collected again, and sent if they changed. @default 300000 */
  reportIntervalMs?: number;
  /** Collects the facts for that periodic refresh. @default collectHostFacts (systeminformation) */
  collectHostFacts?: () => Promise<HostFacts>;
  /**
   * Unenroll instead of staying: once connected, ask the server to delete this connector
   * (`agent.unenroll`); the `deleted` event that follows wipes the identity as an admin's delete
   * does, and calls `onDeleted` with the server that deleted it (of the identity's list, the one
   * this session reached). A failed connect ends it (exit 10) instead of a retry.
   */
  unenroll?: { onDeleted(server: string): void };
  /** Makes the state dir's lock file again when the identity is put back in a removed state dir. */
  relock?: () => Promise<void>;
  /** How often the identity's file is checked for (IdentityKeeper). @default 60000 */
  keepCheckMs?: number;
  /** How long a server may take to send `ready` once the session's socket is open. @default READY_TIMEOUT_MS (session-socket.ts) */
  readyTimeoutMs?: number;
  /** Puts the identity back if its state dir loses it (IdentityKeeper); off for a store that is no dir. @default true */
  keepIdentity?: boolean;
  /**
   * The identity's server list is new (--allow-server-change) and not saved yet: it is saved once a
   * session on one of them is ready, so that a list with no working server in it (a typo, a URL
   * that redirects or names the wrong server) is never kept. @default false
   */
  serverListMoved?: boolean;
}

/**
 * Stays connected until told to stop or cut off: reconnects with full-jitter backoff on network
 * failures, saves renewed identities, and on a final refusal or a revoke/delete wipes the identity
 * and resolves with the exit code.
 */
export function runSession(o: SessionOptions): Promise<number> {
  let identity = o.identity;
  const { logger, store } = o;
  /** The status file always names this session's connector and server (the identity's, renewed or not). */
  const writeStatus = (state: AgentStatus['state'], status: AgentStatus['status'], detail: string | null) =>
    store.writeStatus({ state, status, connectorId: identity.connectorId, server: servers.current, detail });
  // Replicas: a random one first, the next one after each failed connect or lost session.
  const servers = new ServerRotation(o.servers ?? serversOf(identity));
  let finished = false;
  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((resolve) => {
    resolveExit = resolve;
  });
  let connectedOnce = false;
  let serverListUnsaved = Boolean(o.serverListMoved);
  // Identities expire and proofs are checked by the server's clock, which this host's may be off.
  const serverClock = new ServerClock(logger);
  const link = new SessionLink({
    logger,
    servers,
    serverClock,
    identityExpiresAt: () => identity.identityExpiresAt,
    unenrolling: Boolean(o.unenroll),
    connectedOnce: () => connectedOnce,
    finished: () => finished,
    currentSocket: () => wsClient.connection?.ws,
    stop: (code, ending, detail) => void finish(code, ending, detail),
    finalReason: (reason) => void onFinalReason(reason),
    disconnected: (detail) => void writeStatus('disconnected', null, detail),
  });

  const wsClient = createWSClient({
    url: () => `${link.nextServer().replace(/^http/, 'ws')}/trpc`,
    WebSocket: withSessionNonce(o.transport.WebSocket) as unknown as typeof globalThis.WebSocket,
    // Called once the socket is open: the proof signs the nonce of this very connection and the
    // server this agent means to reach, so neither a replay nor a relay can use it.
    connectionParams: async () => {
      const ws = wsClient.connection?.ws;
      if (ws) socket.awaitReady(ws);
      const time = serverTimeOf(ws);
      if (time) serverClock.observe(time.serverTime, time.receivedAt);
      return {
        identity: identity.identityToken,
        proof: await createProof(
          identity.privateJwk,
          identity.identityToken,
          { nonce: sessionNonceOf(ws), htu: new URL(servers.current).origin },
          serverClock.now(),
        ),
      };
    },
    retryDelayMs: (attempt) => link.retryDelayMs(attempt),
    // One ping per 45 s keeps NAT mappings (usually ≥ 60 s) alive and finds a dead link within
    // about a minute (45 s, 15 s for the pong, 2 s for the close: withSessionNonce); every ping is
    // server CPU, times the fleet.
    keepAlive: { enabled: true, intervalMs: 45_000, pongTimeoutMs: 15_000 },
    onError: (event) => link.socketError(event),
    onClose: (cause) => link.socketClosed(cause),
  });
  const client = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient })] });

  const socket = new SessionSocket({
    current: () => wsClient.connection?.ws,
    finished: () => finished,
    readyTimeoutMs: o.readyTimeoutMs,
    noReady: (ws, waitedMs) => link.noReady(ws, waitedMs),
  });

  const { kty, crv, x } = identity.privateJwk;
  const ownThumbprint = thumbprintOf({ kty, crv, x });

  /**
   * Saves a renewed identity (pushed, or answered to `agent.renew`) and times the next renewal from
   * it; throws UnusableIdentity, keeping the current one, when it is not this connector's (see
   * identityProblem). Only its token and expiry are taken: the rest of an answer (a server list, a
   * key) was spread into the saved identity too.
   */
  async function adoptIdentity(renewed: RenewableIdentity) {
    const held = claimsOf(identity.identityToken);
    const problem = identityProblem(renewed, {
      connectorId: identity.connectorId,
      groupId: identity.groupId,
      jkt: await ownThumbprint,
      issuer: held.issuer,
      issuedNotBefore: held.issuedAt,
    });
    if (problem)
      throw new UnusableIdentity(`${servers.current} sent ${problem}; the current identity is kept`);
    const savedExpiresAt = identity.identityExpiresAt;
    identity = {
      ...identity,
      identityToken: renewed.identityToken,
      identityExpiresAt: renewed.identityExpiresAt,
    };
    renewal.arm(identity);
    if (await saver.save(savedExpiresAt))
      logger.info('identity renewed', { expiresAt: renewed.identityExpiresAt });
  }
  const saver = new IdentitySaver(store, logger, () => identity);
  const keeper = new IdentityKeeper({
    store,
    logger,
    current: () => identity,
    relock: o.relock,
    checkMs: o.keepCheckMs,
  });
  if (!o.unenroll && o.keepIdentity !== false) keeper.start();
  // Asks for a renewal itself when no push came: a server restarted or a push lost costs no identity.
  const renewal = createRenewalTimer({
    renew: () => socket.afterClosing(() => client.agent.renew.mutate()),
    adopt: adoptIdentity,
    logger,
    now: () => serverClock.now(),
  });
  renewal.arm(identity);

  /** Saves the moved server list, now that one of its servers answered; a state dir that refuses it stops the agent. */
  async function saveServerList(): Promise<boolean> {
    serverListUnsaved = false;
    try {
      await store.save(identity);
      logger.info('the new server list is saved with the identity', { servers: servers.servers.join(', ') });
      return true;
    } catch (error) {
      logger.error(cannotWrite(store.dir, error, 'the new server list is not saved with the identity'));
      await finish(EXIT.FAILED, 'stopped', 'the new server list could not be saved');
      return false;
    }
  }

  /** Tells the server, over the session that told us, that the identity is wiped; bounded, never fatal. */
  async function acknowledge(event: 'revoked' | 'deleted') {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, TERMINATION_ACK_TIMEOUT_MS);
    });
    // A server from before receipts does not know the call, and one past its bound has closed: either
    // way the revocation stands; the server learns it at this identity's next handshake, if ever.
    await Promise.race([client.agent.acknowledge.mutate({ event }).catch(() => {}), bound]);
    clearTimeout(timer);
  }

  async function finish(
    code: number,
    state: 'revoked' | 'deleted' | 'refused' | 'replaced' | 'stopped' | 'misconfigured',
    detail: string | null,
    /** The session's final event, told over a socket still open: acknowledged once the identity is wiped. */
    told?: 'revoked' | 'deleted',
  ) {
    if (finished) return;
    finished = true;
    socket.readyCame();
    hostReporter.stop();
    renewal.stop();
    // A renewed identity still only in memory: a last try, unless it is about to be wiped.
    if (code !== EXIT.REVOKED && code !== EXIT.IDENTITY_GONE) {
      await saver.flush();
      await keeper.flush();
    } else {
      saver.stop();
      await keeper.stop();
    }
    subscription.unsubscribe();
    const wipe =
      code === EXIT.REVOKED || code === EXIT.IDENTITY_GONE
        ? wipeIdentity(store, identity.connectorId, logger)
        : Promise.resolve(false);
    // Only a wiped identity is acknowledged: the server reports it as confirmed to the admin.
    const acknowledged = told
      ? wipe.then((wiped) => (wiped ? acknowledge(told) : undefined))
      : Promise.resolve();
    // The socket is done with either way; closing it need not delay the exit.
    void acknowledged.then(() => wsClient.close()).catch(() => {});
    await Promise.all([acknowledged, wipe, writeStatus(state, null, detail)]);
    resolveExit(code);
  }

  async function onFinalReason(reason: ErrorReason) {
    // The close that follows a `revoked`/`deleted` event repeats what the event said.
    if (finished) return;
    const code = FINAL_SESSION_REASONS[reason];
    if (code === EXIT.REVOKED) {
      logger.error('this connector was revoked; wiping its identity', { reason });
      return finish(EXIT.REVOKED, 'revoked', reason);
    }
    if (code === EXIT.IDENTITY_GONE) {
      logger.error(
        'the server no longer accepts this identity; wiping it. Enroll again with a current key.',
        { reason },
      );
      return finish(EXIT.IDENTITY_GONE, 'deleted', reason);
    }
    if (reason === 'PROOF_INVALID') {
      // The agent dates its proofs by the server's clock and signs each connection's nonce, so
      // what is left is the URL the proof names, or something between them that changes the upgrade:
      // configuration, which a restart does not mend (exit 2: the unit leaves it stopped).
      logger.error(
        `the server refused this agent's proof (PROOF_INVALID): ${servers.current} is not the URL the server was told it is reached by (its --public-url), or a proxy between them does not pass the upgrade's response headers unchanged. Use the server's public URL as --server (with --allow-server-change)`,
        { reason },
      );
      return finish(EXIT.USAGE, 'misconfigured', reason);
    }
    logger.error('the server refused the session', { reason });
    return finish(EXIT.FAILED, 'refused', reason);
  }

  const hostReporter = new HostReporter({
    report: (host) => socket.afterClosing(() => client.agent.report.mutate({ host })),
    logger,
    hostFacts: o.hostFacts,
    intervalMs: o.reportIntervalMs,
    collect: o.collectHostFacts,
    finished: () => finished,
  });

  async function onEvent(event: SessionEvent) {
    switch (event.type) {
      case 'ready':
        socket.readyCame();
        connectedOnce = true;
        link.connected();
        logger.info(`connected to ${servers.current}`, {
          connector: event.connectorId,
          status: event.status,
        });
        // Before the status says connected: whoever reads it then finds the list saved.
        if (serverListUnsaved && !(await saveServerList())) break;
        await writeStatus('connected', event.status, null);
        if (o.unenroll) {
          // Answered once the `deleted` event it causes is acknowledged: that event ends the session.
          socket
            .afterClosing(() => client.agent.unenroll.mutate())
            .catch((error: Error) => {
              if (finished) return;
              logger.error('the server did not unenroll this connector', { error: error.message });
              void finish(EXIT.FAILED, 'refused', error.message);
            });
          break;
        }
        // An older server sends no digest: then the facts are sent, as they always were.
        hostReporter.sessionStarted(event.hostDigest ?? null);
        break;
      case 'status':
        logger.info(`connector ${event.status} by an admin`, { scope: event.scope });
        await writeStatus('connected', event.status, `${event.scope} ${event.status}`);
        break;
      case 'identity':
        await adoptIdentity({
          identityToken: event.identityToken,
          identityExpiresAt: event.identityExpiresAt,
        }).catch((error: unknown) => {
          if (!(error instanceof UnusableIdentity)) throw error;
          logger.warn(error.message);
        });
        break;
      case 'revoked':
        logger.error('this connector was revoked by an admin', { reason: event.reason ?? undefined });
        await finish(EXIT.REVOKED, 'revoked', event.reason, 'revoked');
        break;
      case 'deleted':
        if (o.unenroll) {
          logger.info('the server deleted this connector');
          o.unenroll.onDeleted(servers.current);
        } else {
          // Not "by an admin": the pending sweep deletes too (a first session that began as it ran).
          logger.error(
            'this connector was deleted on the server: its identity is wiped; enroll the host again with a provisioning key to bring it back',
          );
        }
        await finish(EXIT.IDENTITY_GONE, 'deleted', 'deleted', 'deleted');
        break;
    }
  }

  /**
   * The session's subscription. tRPC ends one that errs: a socket the server closed while the
   * subscription was on its way (a handshake refused, PROOF_INVALID from one replica of the list)
   * left the agent on the next server with none, closed there for not subscribing in time, for
   * ever. So an error that is no server's answer (no reason) makes a new one, which goes out with
   * the next connection; there is one such error per lost connection, at the reconnect's pace.
   */
  function subscribe(): { unsubscribe(): void } {
    return client.agent.session.subscribe(undefined, {
      onData: (data) => {
        const event = parseSessionEvent(data);
        if (!event) {
          // Bounded by the socket's message budget (server-frames.ts).
          const type = (data as { type?: unknown } | null)?.type;
          logger.warn('the server sent a session event the agent does not know; ignored', {
            type: typeof type === 'string' ? type.slice(0, 64) : typeof type,
          });
          return;
        }
        onEvent(event).catch((error) =>
          logger.error('could not handle a server event', { error: String(error) }),
        );
      },
      onError: (error) => {
        const reason =
          error instanceof TRPCClientError
            ? (error.data as { reason?: unknown } | undefined)?.reason
            : undefined;
        // One replica of several refusing the proof: its socket's close decides (SessionLink knows
        // which server refused), and the next server needs a subscription of its own.
        if (reason === 'PROOF_INVALID' && servers.servers.length > 1 && !link.everyServerPassedOver()) {
          if (!finished) subscription = subscribe();
          return;
        }
        if (isErrorReason(reason) && (FINAL_SESSION_REASONS[reason] || reason === 'PROOF_INVALID')) {
          void onFinalReason(reason);
          return;
        }
        logger.warn('session error; reconnecting', { error: error.message });
        if (!finished && reason === undefined) subscription = subscribe();
      },
    });
  }
  let subscription = subscribe();

  void writeStatus('connecting', null, null);
  logger.info(`connecting to ${servers.current.replace(/^http/, 'ws')}/trpc`, {
    connector: identity.connectorId,
    ...(servers.servers.length > 1 ? { servers: servers.servers.join(', ') } : {}),
  });

  const onAbort = () => void finish(EXIT.STOPPED, 'stopped', 'signal');
  if (o.signal.aborted) onAbort();
  else o.signal.addEventListener('abort', onAbort, { once: true });
  return exit;
}
