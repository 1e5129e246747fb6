import { DomainError, type ErrorReason } from '../../shared/errors.js';
import { type HostFacts, sessionParamsSchema } from '../../shared/schemas.js';
import type { Clock } from '../clock.js';
import type { Store } from '../store/store.js';
import { ConnectRate } from './connect-rate.js';
import type { ConnectorService } from './connectors.js';
import type { IdentityAuthority, IdentityClaims } from './identity.js';
import { unverifiedHeader, unverifiedPayload } from './jws.js';
import { type ExpectedProofBinding, verifyProof } from './proof.js';
import type { UnsavedTerminations } from './unsaved-terminations.js';
import { effectiveStatus } from './views.js';

export interface HandshakeCheckDeps {
  store: Store;
  identity: IdentityAuthority;
  connectors: Pick<ConnectorService, 'confirmTermination'>;
  unsavedTerminations: UnsavedTerminations;
  clock: Clock;
  /** Sessions one connector may open a minute (see ConnectRate). */
  sessionsPerConnectorPerMinute: number;
}

/** What a connector that may hold a session looks like to it right now. */
export interface UsableConnector {
  effectiveStatus: 'enabled' | 'disabled';
  host: HostFacts | undefined;
}

/** Where a handshake comes from and what its proof must be bound to. */
export interface HandshakeCredentials {
  remoteAddress: string;
  binding: ExpectedProofBinding;
  /**
   * Set while this address is blocked for failed handshakes: only a handshake naming an existing
   * connector (usable or revoked) is worth the signature checks; anything else is refused at once.
   */
  knownConnectorsOnly?: boolean;
}

/** Refusals of handshakes that proved nothing (no valid identity with a matching proof). */
export function provedNothing(reason: ErrorReason): boolean {
  return reason === 'IDENTITY_INVALID' || reason === 'IDENTITY_UNKNOWN_SIGNER' || reason === 'PROOF_INVALID';
}

/** Refusals of handshakes whose identity and proof checked out, with the connector they named. */
const refusedConnectors = new WeakMap<Error, string>();

/** The connector a refused handshake proved it holds the identity of, or null (it proved nothing). */
export function connectorOfRefusal(error: unknown): string | null {
  return error instanceof Error ? (refusedConnectors.get(error) ?? null) : null;
}

/**
 * Who may open an agent session: the identity (signature, kid, iss, aud, expiry), the proof of
 * possession bound to it and to this connection, the connector's state, and the per-connector
 * allowance of sessions. A live session is checked here again whenever its connector changes.
 * What is recorded of sessions is the AgentSessionService's.
 */
export class HandshakeChecks {
  private readonly connectRate: ConnectRate;

  constructor(private readonly deps: HandshakeCheckDeps) {
    this.connectRate = new ConnectRate(deps.clock, deps.sessionsPerConnectorPerMinute);
  }

  /**
   * Checks a handshake and answers the identity's claims; throws a coded DomainError (RATE_LIMITED,
   * with retryAfterSeconds, for a connector that opened its allowance of sessions this minute).
   */
  async authenticate(connectionParams: unknown, from: HandshakeCredentials): Promise<IdentityClaims> {
    const parsed = sessionParamsSchema.safeParse(connectionParams);
    if (!parsed.success)
      throw new DomainError('IDENTITY_INVALID', 'The session needs connectionParams {identity, proof}.');
    if (from.knownConnectorsOnly && !this.namesKnownConnector(parsed.data.identity))
      throw new DomainError('IDENTITY_INVALID');
    this.requireConnectAllowance(parsed.data.identity);
    const claims = await this.deps.identity.verifyIdentity(parsed.data.identity).catch((error: unknown) => {
      throw this.revokedHolderOfRetiredIdentity(error, parsed.data, from) ?? error;
    });
    verifyProof(parsed.data.proof, parsed.data.identity, claims.jkt, from.binding, this.deps.clock.now());
    this.connectRate.checked(claims.connectorId);
    try {
      await this.requireUsableNow(claims.connectorId, claims.jkt);
    } catch (error) {
      this.confirmToldAtHandshake(error, claims, from.remoteAddress);
      // Signature and proof checked out: the refusal may name its connector (see connectorOfRefusal).
      if (error instanceof Error) refusedConnectors.set(error, claims.connectorId);
      throw error;
    }
    return claims;
  }

  /**
   * Checks that the connector exists, is not revoked (nor cut off by a revoke or delete not saved
   * yet) and is still bound to the key pair `jkt`; answers its effective status and host facts.
   */
  requireUsable(connectorId: string, jkt: string): UsableConnector {
    // A revoke or delete whose write failed has told the agent already: its record must not let it back.
    const unsaved = this.deps.unsavedTerminations.of(connectorId);
    if (unsaved) throw new DomainError(unsaved === 'revoked' ? 'CONNECTOR_REVOKED' : 'CONNECTOR_NOT_FOUND');
    return this.deps.store.read((view) => {
      const record = view.get('connectors', connectorId);
      if (!record) throw new DomainError('CONNECTOR_NOT_FOUND');
      if (record.status === 'revoked') throw new DomainError('CONNECTOR_REVOKED');
      // The record's thumbprint must match too: an identity is bound to the key pair that enrolled.
      if (record.keyThumbprint !== jkt) throw new DomainError('IDENTITY_INVALID');
      return {
        effectiveStatus: effectiveStatus(record, view.get('groups', record.groupId)),
        host: record.host,
      };
    });
  }

  /**
   * An identity signed by a key retired since (`signing-keys retire --force`) proves nothing of its
   * own. But if it names a revoked connector whose key pair's thumbprint it carries, and the proof
   * (bound to this connection) is signed by that key pair, the host is the one enrolled: it is told
   * CONNECTOR_REVOKED (its agent exits 4, as for any revoked host, not 5) and the revocation is
   * confirmed. Answers that refusal, or null (the original one stands).
   */
  private revokedHolderOfRetiredIdentity(
    error: unknown,
    params: { identity: string; proof: string },
    from: HandshakeCredentials,
  ): DomainError | null {
    if (!(error instanceof DomainError && error.reason === 'IDENTITY_INVALID')) return null;
    const kid = unverifiedHeader(params.identity)?.kid;
    if (typeof kid !== 'string' || !this.deps.identity.retiredKeyIds().has(kid)) return null;
    const claims = unverifiedPayload(params.identity);
    const connectorId = claims?.sub;
    const jkt = (claims?.cnf as { jkt?: unknown } | undefined)?.jkt;
    if (typeof connectorId !== 'string' || typeof jkt !== 'string') return null;
    const record = this.deps.store.read((view) => view.get('connectors', connectorId));
    if (record?.status !== 'revoked' || record.keyThumbprint !== jkt) return null;
    try {
      verifyProof(params.proof, params.identity, jkt, from.binding, this.deps.clock.now());
    } catch {
      return null;
    }
    this.connectRate.checked(connectorId);
    const revoked = new DomainError('CONNECTOR_REVOKED');
    this.confirmToldAtHandshake(revoked, { connectorId, groupId: record.groupId }, from.remoteAddress);
    refusedConnectors.set(revoked, connectorId);
    return revoked;
  }

  /**
   * requireUsable, but a connector this store does not hold is looked for again once the store has
   * caught up: an identity whose signature checked out names a connector that was enrolled, and a
   * replica behind on the change feed (its enrollment committed through another replica a few ms
   * ago) must not tell a new agent that its connector was deleted.
   */
  private async requireUsableNow(connectorId: string, jkt: string): Promise<UsableConnector> {
    try {
      return this.requireUsable(connectorId, jkt);
    } catch (error) {
      const missing =
        error instanceof DomainError &&
        error.reason === 'CONNECTOR_NOT_FOUND' &&
        !this.deps.unsavedTerminations.of(connectorId);
      if (!missing) throw error;
      await this.deps.store.caughtUp();
      return this.requireUsable(connectorId, jkt);
    }
  }

  /** Refuses, before any signature is checked, a handshake naming a connector past its allowance. */
  private requireConnectAllowance(token: string): void {
    const connectorId = unverifiedPayload(token)?.sub;
    if (typeof connectorId !== 'string') return;
    const retryAfterSeconds = this.connectRate.retryAfterSeconds(connectorId);
    if (retryAfterSeconds === 0) return;
    throw new DomainError(
      'RATE_LIMITED',
      `This connector opened ${this.deps.sessionsPerConnectorPerMinute} sessions within a minute; retry in ${retryAfterSeconds} s.`,
      { retryAfterSeconds },
    );
  }

  /**
   * Whether an identity token names a connector that exists with the thumbprint the token claims,
   * read without checking its signature: a cheap filter before the signature checks. A revoked one
   * passes: its host must still be told (CONNECTOR_REVOKED, exit 4), not asked to retry.
   */
  private namesKnownConnector(token: string): boolean {
    const claims = unverifiedPayload(token);
    const jkt = (claims?.cnf as { jkt?: unknown } | undefined)?.jkt;
    if (typeof claims?.sub !== 'string' || typeof jkt !== 'string') return false;
    try {
      this.requireUsable(claims.sub, jkt);
      return true;
    } catch (error) {
      return error instanceof DomainError && error.reason === 'CONNECTOR_REVOKED';
    }
  }

  /**
   * A handshake whose identity and proof checked out was refused because its connector is revoked or
   * gone: the host holds that identity and is told now, which confirms a termination it missed.
   */
  private confirmToldAtHandshake(
    error: unknown,
    claims: { connectorId: string; groupId: string },
    remoteAddress: string,
  ): void {
    if (!(error instanceof DomainError)) return;
    const event =
      error.reason === 'CONNECTOR_REVOKED'
        ? 'revoked'
        : error.reason === 'CONNECTOR_NOT_FOUND'
          ? 'deleted'
          : null;
    if (event)
      this.deps.connectors.confirmTermination(claims.connectorId, {
        event,
        groupId: claims.groupId,
        at: this.deps.clock.now(),
        from: remoteAddress,
        via: 'handshake',
      });
  }
}
