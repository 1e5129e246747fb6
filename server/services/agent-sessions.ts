import type { Logger } from 'pino';
import { DomainError, type ErrorReason } from '../../shared/errors.js';
import { type HostFacts, sessionParamsSchema } from '../../shared/schemas.js';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import { ThrottledLines } from '../throttled-lines.js';
import type { AuditLog, RecordOptions } from './audit.js';
import { ConnectRate } from './connect-rate.js';
import type { ConnectorService } from './connectors.js';
import type { Policy } from './deps.js';
import type { ExpectedProofBinding, IdentityAuthority, IdentityClaims, IssuedIdentity } from './identity.js';
import { unverifiedHeader, unverifiedPayload } from './jws.js';
import { RepeatedConnects } from './repeated-connects.js';
import type { UnsavedTerminations } from './unsaved-terminations.js';
import { effectiveStatus, iso } from './views.js';

export interface AgentSessionDeps {
  store: Store;
  identity: IdentityAuthority;
  connectors: Pick<ConnectorService, 'recordConnection' | 'recordIdentity' | 'confirmTermination'>;
  unsavedTerminations: UnsavedTerminations;
  audit: AuditLog;
  clock: Clock;
  policy: Pick<Policy, 'identityTtlMs'>;
  metrics: Metrics;
  logger: Logger;
  /** Sessions one connector may open a minute (see ConnectRate). */
  sessionsPerConnectorPerMinute: number;
}

/** Who is on the other end of a session, as the audit log and the connector record know it. */
export interface SessionParty {
  connectorId: string;
  groupId: string;
  remoteAddress: string;
}

/** A session's identity, as a renewal needs it. */
export interface SessionIdentity extends SessionParty {
  provisioningKeyId: string;
  jkt: string;
  identityIssuedAt: number;
  identityExpiresAt: number;
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

/** When an identity is due for renewal: a third of its lifetime left. */
/** Refusals of handshakes whose identity and proof checked out, with the connector they named. */
const refusedConnectors = new WeakMap<Error, string>();

/** The connector a refused handshake proved it holds the identity of, or null (it proved nothing). */
export function connectorOfRefusal(error: unknown): string | null {
  return error instanceof Error ? (refusedConnectors.get(error) ?? null) : null;
}

export function renewalDueAt(identity: { identityIssuedAt: number; identityExpiresAt: number }): number {
  return identity.identityExpiresAt - (identity.identityExpiresAt - identity.identityIssuedAt) / 3;
}

/**
 * The domain side of agent sessions: who may open one (identity, proof, connector state), what a
 * live one may still do, when and how its identity is renewed, and what is recorded and audited of
 * it. The session hub holds the sockets and asks here.
 */
export class AgentSessionService {
  /** The "session refused" lines: at most one per reason per 10 s. */
  private readonly refusalLines = new ThrottledLines(10_000);
  /** `session.connected` events: about 10 per connector a minute at most, the rest summed. */
  private readonly repeatedConnects: RepeatedConnects;
  private readonly connectRate: ConnectRate;

  constructor(private readonly deps: AgentSessionDeps) {
    this.connectRate = new ConnectRate(deps.clock, deps.sessionsPerConnectorPerMinute);
    this.repeatedConnects = new RepeatedConnects(deps.clock, (s) =>
      this.audit(
        'session.connected',
        s.last,
        {
          suppressed: s.suppressed,
          ...(s.replaced > 0 ? { replaced: s.replaced } : {}),
          ...(s.renewed > 0 ? { renewed: s.renewed } : {}),
          addresses: s.addresses,
          windowStart: iso(s.windowStart),
          windowEnd: iso(s.windowEnd),
        },
        // A replacement is a clone's or a thief's mark: the summary of any is a security event.
        { lazy: s.replaced === 0, security: s.replaced > 0 },
      ),
    );
  }

  /** When the connector's newest identity was issued (its record's), or null. */
  latestIssuedAt(connectorId: string): number | null {
    return this.deps.store.read((view) => view.get('connectors', connectorId)?.identity?.issuedAt ?? null);
  }

  /** Writes what is held of repeated connects (the server is stopping). */
  close(): void {
    this.repeatedConnects.close();
  }

  /**
   * Checks a handshake: the identity (signature, kid, iss, aud, expiry), the proof of possession
   * bound to it and to this connection, and that the connector exists and is not revoked. Answers
   * the identity's claims; throws a coded DomainError (RATE_LIMITED, with retryAfterSeconds, for a
   * connector that opened its allowance of sessions this minute).
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
    this.deps.identity.verifyProof(parsed.data.proof, parsed.data.identity, claims.jkt, from.binding);
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
      this.deps.identity.verifyProof(params.proof, params.identity, jkt, from.binding);
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

  /** The status a connector's session is told now: disabled if it or its group is. */
  currentStatus(connectorId: string): 'enabled' | 'disabled' {
    return this.deps.store.read((view) => {
      const record = view.get('connectors', connectorId);
      return effectiveStatus(record, record ? view.get('groups', record.groupId) : undefined);
    });
  }

  /**
   * Records a refused handshake: metrics, log, and a coalesced audit event, naming the connector
   * when the identity proved it (a revoked one tried again: which identity is out there).
   */
  recordRefusal(
    reason: ErrorReason,
    remoteAddress: string,
    connectorId: string | null = null,
    detail: string | null = null,
  ): void {
    this.deps.metrics.sessionRefusals.inc({ reason });
    // A stranger can send refused handshakes at will: a line per reason every few seconds, naming
    // the last one and counting the rest (1,500 junk handshakes wrote 1,500 lines).
    this.refusalLines.say(reason, (count) =>
      this.deps.logger.info(
        {
          reason,
          remoteAddress,
          ...(connectorId ? { connectorId } : {}),
          ...(detail ? { detail } : {}),
          ...(count > 1 ? { refusedSinceLastLine: count } : {}),
        },
        'session refused',
      ),
    );
    this.deps.audit
      .recordRefusal({
        type: 'session.refused',
        actor: { kind: 'agent', connectorId },
        outcome: 'refused',
        reason,
        security: reason === 'CONNECTOR_REVOKED' || reason === 'PROOF_INVALID',
        remoteAddress,
        connectorId,
      })
      .catch((error) => this.auditFailed(error));
  }

  /**
   * Records that `session` became its connector's live session at `now`, replacing one from
   * `replacedFrom` if set, and audits it.
   */
  recordConnected(session: SessionParty, now: number, replacedFrom: string | null): void {
    const previousConnectAt = this.deps.store.read(
      (view) => view.get('connectors', session.connectorId)?.lastConnectedAt ?? null,
    );
    this.deps.connectors.recordConnection(session.connectorId, {
      connectedAt: now,
      seenAt: now,
      remoteAddress: session.remoteAddress,
      ...(replacedFrom !== null ? { replacedFrom } : {}),
    });
    // One connector reconnecting in a loop is summed up, its replacements too (RepeatedConnects).
    const audited = this.repeatedConnects.admit(session, previousConnectAt, replacedFrom !== null);
    if (audited && replacedFrom !== null) {
      this.audit(
        'session.replaced',
        session,
        { previousRemoteAddress: replacedFrom, newRemoteAddress: session.remoteAddress },
        { security: true },
      );
    }
    // Every connect is audited, but without an fsync of its own (it rides along with the next
    // write, within 250 ms): a fleet reconnecting after a restart is tens of thousands of them.
    // The per-connect log lines are debug for the same reason; /metrics counts them.
    if (audited) this.audit('session.connected', session, {}, { lazy: true });
    this.deps.logger.debug(
      { connectorId: session.connectorId, remoteAddress: session.remoteAddress },
      'agent connected',
    );
  }

  /**
   * Records that `session`, live here, was replaced at `now` by a newer session of its connector on
   * another replica, from `newRemoteAddress` (that replica recorded the connect), and audits it as a
   * replacement within one server is.
   */
  recordReplacedElsewhere(session: SessionParty, newRemoteAddress: string, now: number): void {
    this.deps.connectors.recordConnection(session.connectorId, {
      seenAt: now,
      remoteAddress: newRemoteAddress,
      replacedFrom: session.remoteAddress,
    });
    this.audit(
      'session.replaced',
      session,
      { previousRemoteAddress: session.remoteAddress, newRemoteAddress },
      { security: true },
    );
  }

  /** Records that the connector's live session ended (or was still live at shutdown) at `now`. */
  recordSeen(connectorId: string, now: number): void {
    this.deps.connectors.recordConnection(connectorId, { seenAt: now });
  }

  /**
   * Refuses (RATE_LIMITED, with retryAfterSeconds) a renewal asked for before half the identity's
   * lifetime has passed, so a session can cost at most one signature per half lifetime.
   */
  requireRenewalAllowed(identity: SessionIdentity): void {
    const { identityIssuedAt, identityExpiresAt } = identity;
    const halfLife = identityIssuedAt + (identityExpiresAt - identityIssuedAt) / 2;
    const wait = halfLife - this.deps.clock.now();
    if (wait > 0) {
      const retryAfterSeconds = Math.ceil(wait / 1000);
      const message = `The identity is not due for renewal; retry in ${retryAfterSeconds} s.`;
      throw new DomainError('RATE_LIMITED', message, { retryAfterSeconds });
    }
  }

  /** The kid that signs identities issued now: a session holding another's is renewed early. */
  get activeKeyId(): string {
    return this.deps.identity.activeKeyId;
  }

  /** Signing keys retired: an identity one of them signed is refused at its next handshake. */
  retiredKeyIds(): ReadonlySet<string> {
    return this.deps.identity.retiredKeyIds();
  }

  /**
   * Issues a new identity for the session's connector and key, records and audits it: the one path
   * of pushed and requested renewals.
   */
  async renew(session: SessionIdentity, via: 'push' | 'request'): Promise<IssuedIdentity> {
    const renewed = await this.deps.identity.issue(
      {
        connectorId: session.connectorId,
        groupId: session.groupId,
        provisioningKeyId: session.provisioningKeyId,
        jkt: session.jkt,
      },
      this.deps.policy.identityTtlMs,
    );
    this.deps.connectors.recordIdentity(session.connectorId, {
      issuedAt: renewed.issuedAt,
      expiresAt: renewed.expiresAt,
      keyId: renewed.keyId,
    });
    if (this.repeatedConnects.admitRenewal(session.connectorId))
      this.audit('identity.renewed', session, { expiresAt: new Date(renewed.expiresAt).toISOString(), via });
    return renewed;
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

  private audit(
    type: string,
    session: SessionParty,
    details: Record<string, unknown>,
    { security = false, ...options }: RecordOptions & { security?: boolean } = {},
  ): void {
    this.deps.audit
      .record(
        {
          type,
          actor: { kind: 'agent', connectorId: session.connectorId },
          remoteAddress: session.remoteAddress,
          connectorId: session.connectorId,
          groupId: session.groupId,
          security,
          details,
        },
        options,
      )
      .catch((error) => this.auditFailed(error));
  }

  /** A lost audit event: the audit log itself reported why (its write error), once for the batch. */
  private auditFailed(error: unknown): void {
    if (error instanceof DomainError && error.reason === 'AUDIT_NOT_WRITTEN') return;
    this.deps.logger.error({ err: error }, 'audit write failed');
  }
}
