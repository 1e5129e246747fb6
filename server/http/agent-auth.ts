import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import { DomainError, ERROR_REASONS } from '../../shared/errors.js';
import type { Context, Services } from '../context.js';
import { connectorOfRefusal, provedNothing } from '../services/handshake-checks.js';
import type { SessionHub } from '../sessions/hub.js';
import { authenticationTurns } from '../sessions/turns.js';
import type { ClientAddressOf } from './client-address.js';

/** Authentications started per event-loop turn (~1 ms of CPU each). */
const AUTHENTICATIONS_PER_TURN = 16;

export interface AgentAuthOptions {
  services: Services;
  hub: SessionHub;
  logger: Logger;
  /** The --public-url's origin, which an agent's proof must name; null without --public-url. */
  publicOrigin: string | null;
  clientAddressOf: ClientAddressOf;
}

/**
 * Makes the function that turns a websocket's connectionParams into its tRPC context: the agent's
 * session if its identity and proof check out, else the reason it was refused (the socket is then
 * closed with that reason).
 */
export function agentAuthenticator({
  services,
  hub,
  logger,
  publicOrigin,
  clientAddressOf,
}: AgentAuthOptions) {
  const authenticationTurn = authenticationTurns(AUTHENTICATIONS_PER_TURN);
  return async (
    req: IncomingMessage,
    ws: WebSocket,
    connectionParams: unknown,
    nonce: string,
  ): Promise<Context> => {
    await authenticationTurn();
    const remoteAddress = clientAddressOf(req);
    const base = { services, hub, remoteAddress, bearerToken: null };
    // Failed handshakes block the address they come from, but only for handshakes that prove
    // nothing: an agent whose identity and proof check out is let in, so one stranger behind a NAT
    // cannot keep the site's fleet out. A blocked address's handshakes are signature-checked only
    // if they name a known connector (a revoked one too: its host must be told).
    const blockedForSeconds = await services.limiter.handshakeRetryAfter(remoteAddress);
    try {
      const claims = await services.handshakes.authenticate(connectionParams, {
        remoteAddress,
        binding: { nonce, origin: publicOrigin },
        knownConnectorsOnly: blockedForSeconds > 0,
      });
      const agent = hub.admit(claims, ws, req.socket, remoteAddress);
      return { ...base, agent, agentRefusal: null };
    } catch (error) {
      const reason = error instanceof DomainError ? error.reason : 'IDENTITY_INVALID';
      if (!(error instanceof DomainError))
        logger.error({ err: error }, 'session authentication failed unexpectedly');
      // A full address is not a failed attempt: the agent behind it did nothing wrong.
      if (reason !== 'RATE_LIMITED') await services.limiter.handshakeFailed(remoteAddress);
      if (blockedForSeconds > 0 && provedNothing(reason)) {
        hub.refuse(ws, 'RATE_LIMITED', remoteAddress, blockedForSeconds);
        return { ...base, agent: null, agentRefusal: 'RATE_LIMITED' };
      }
      const detail =
        error instanceof DomainError && error.message !== ERROR_REASONS[reason].message
          ? error.message
          : null;
      const retryAfter = error instanceof DomainError ? error.details.retryAfterSeconds : undefined;
      hub.refuse(
        ws,
        reason,
        remoteAddress,
        typeof retryAfter === 'number' ? retryAfter : undefined,
        connectorOfRefusal(error),
        detail,
      );
      return { ...base, agent: null, agentRefusal: reason };
    }
  };
}
