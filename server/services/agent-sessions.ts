import type { Logger } from 'pino';
import { DomainError, type ErrorReason } from '../../shared/errors.js';
import type { Clock } from '../clock.js';
import type { Metrics } from '../metrics.js';
import type { Store } from '../store/store.js';
import { ThrottledLines } from '../throttled-lines.js';
import type { AuditLog, RecordOptions } from './audit.js';
import type { ConnectorService } from './connectors.js';
import type { Policy } from './deps.js';
import type { IdentityAuthority, IssuedIdentity } from './identity.js';
import { RepeatedConnects } from './repeated-connects.js';
import { effectiveStatus, iso } from './views.js';

export interface AgentSessionDeps {
  store: Store;
  identity: IdentityAuthority;
  connectors: Pick<ConnectorService, 'recordConnection' | 'recordIdentity'>;
  audit: AuditLog;
  clock: Clock;
  policy: Pick<Policy, 'identityTtlMs'>;
  metrics: Metrics;
  logger: Logger;
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

/** When an identity is due for renewal: a third of its lifetime left. */
export function renewalDueAt(identity: { identityIssuedAt: number; identityExpiresAt: number }): number {
  return identity.identityExpiresAt - (identity.identityExpiresAt - identity.identityIssuedAt) / 3;
}

/**
 * The domain side of live agent sessions: what is recorded and audited of them (connects,
 * replacements, refusals, last seen), and when and how a session's identity is renewed. Who may
 * open one is HandshakeChecks'; the session hub holds the sockets and asks both.
 */
export class AgentSessionService {
  /** The "session refused" lines: at most one per reason per 10 s. */
  private readonly refusalLines = new ThrottledLines(10_000);
  /** `session.connected` events: about 10 per connector a minute at most, the rest summed. */
  private readonly repeatedConnects: RepeatedConnects;

  constructor(private readonly deps: AgentSessionDeps) {
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
