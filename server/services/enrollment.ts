import { DomainError, type ErrorReason } from '../../shared/errors.js';
import { keyIdOf, PROVISIONING_KEY_PREFIX } from '../../shared/protocol.js';
import type { Ed25519PublicJwk, HostFacts } from '../../shared/schemas.js';
import type { ConnectorRecord } from '../store/records.js';
import type { StoreView } from '../store/store.js';
import type { ServiceDeps } from './deps.js';
import { ed25519Thumbprint } from './jws.js';
import { onceSaved, savedLate, unlessAuditNotWritten } from './once-saved.js';
import { originOf } from './proof.js';
import { keyState } from './provisioning-keys.js';
import { enrolledConnectorId, keyMatches } from './secrets.js';

export interface EnrollRequest {
  provisioningKey: string;
  publicKey: Ed25519PublicJwk;
  host: HostFacts;
  agentVersion: string;
  name?: string | undefined;
  /** The URL the agent enrolls through (its --server); older agents send none. */
  serverUrl?: string | undefined;
}

export interface EnrollResult {
  connectorId: string;
  groupId: string;
  identityToken: string;
  identityExpiresAt: string;
}

interface KeyCheck {
  keyId: string | null;
  groupId: string | null;
  refusal: ErrorReason | null;
  /** The connector an earlier attempt of this enrollment made (same key pair, same key): answered again. */
  repeat?: ConnectorRecord;
}

/**
 * The reasons that mean someone holds a key that used to be good: a security team wants to know
 * (a key limited to N uses tried an N+1th time may have been copied).
 */
const SECURITY_REASONS: ReadonlySet<ErrorReason> = new Set([
  'KEY_SUPERSEDED',
  'KEY_EXPIRED',
  'KEY_EXHAUSTED',
]);

/** What EnrollmentService is built from. */
export type EnrollmentServiceDeps = Pick<
  ServiceDeps,
  'store' | 'audit' | 'clock' | 'identity' | 'policy' | 'metrics' | 'logger'
> & {
  /** The origin of --public-url, which agents' session proofs must name; null without it. */
  publicOrigin: string | null;
};

export class EnrollmentService {
  constructor(private readonly deps: EnrollmentServiceDeps) {}

  /**
   * Checks the key and, if it is the current key of an enabled group, records the connector and
   * returns its signed identity. The key check runs twice: once before the (costly) signing, so a
   * refused request costs no signature, and again inside the write, so that a key regenerated in
   * between is still refused. A use of the key is counted in that same synchronous step as the
   * check (so N uses admit exactly N enrollments, however many race), and the store takes it back
   * with the rest of the change if the write fails.
   *
   * Idempotent per key pair: the connector's id follows from the group and the agent's public key,
   * so a retry of an attempt whose answer never arrived (a timeout, a stop, a full disk on the host)
   * gets a fresh identity for the connector that attempt made, and counts no second use, even past
   * the key's expiry or last use, as long as the key is still the group's current one.
   */
  async enroll(request: EnrollRequest, remoteAddress: string): Promise<EnrollResult> {
    const keyId = keyIdOf(request.provisioningKey, PROVISIONING_KEY_PREFIX, 'pk');
    const jkt = ed25519Thumbprint(request.publicKey);
    let first = this.deps.store.read((view) => this.checkKey(view, request.provisioningKey, keyId, jkt));
    if (
      first.refusal === 'KEY_INVALID' &&
      keyId &&
      !this.deps.store.read((v) => v.get('provisioningKeys', keyId))
    ) {
      // A key this replica does not know may be one made through another a moment ago (a group
      // created or a key regenerated there): read the change feed before calling it invalid.
      await this.deps.store.caughtUp();
      first = this.deps.store.read((view) => this.checkKey(view, request.provisioningKey, keyId, jkt));
    }
    if (first.refusal) return this.refuse(first, remoteAddress);
    const wrongUrl = this.wrongServerUrl(request.serverUrl);
    if (wrongUrl) return this.refuse({ ...first, refusal: 'PROOF_INVALID' }, remoteAddress, wrongUrl);

    const connectorId = enrolledConnectorId(first.groupId!, jkt);
    const identity = await this.deps.identity.issue(
      { connectorId, groupId: first.groupId!, provisioningKeyId: first.keyId!, jkt },
      this.deps.policy.identityTtlMs,
    );
    const now = this.deps.clock.now();
    const durable = this.deps.store.transact((tx): KeyCheck => {
      const check = this.checkKey(tx, request.provisioningKey, keyId, jkt);
      if (check.refusal) return check;
      if (check.groupId !== first.groupId) return { ...check, refusal: 'KEY_INVALID' };
      const issued = { issuedAt: identity.issuedAt, expiresAt: identity.expiresAt, keyId: identity.keyId };
      if (check.repeat) {
        // The identity the record names stays while it is current: it may be the one its host
        // holds, while the repeat's may reach no one (repeated with someone else's public key, the
        // token is bound to a private key the caller lacks). Replaced, it would hide the host's
        // signing key from `signing-keys retire`, which would then let it go and wipe the host.
        const held = check.repeat.identity;
        if (!held || held.expiresAt <= now) tx.patch('connectors', connectorId, { identity: issued });
        return check;
      }
      const record: ConnectorRecord = {
        id: connectorId,
        groupId: check.groupId!,
        name: request.name ?? request.host.hostname,
        status: 'enabled',
        enrolledAt: now,
        enrolledWithKeyId: check.keyId!,
        keyThumbprint: jkt,
        agentVersion: request.agentVersion,
        host: request.host,
        remoteAddress,
        lastConnectedAt: null,
        lastSeenAt: null,
        identity: issued,
        revokedAt: null,
        revokeReason: null,
      };
      tx.put('connectors', record);
      const key = tx.get('provisioningKeys', check.keyId!)!;
      tx.patch('provisioningKeys', key.id, { lastUsedAt: now, uses: (key.uses ?? 0) + 1 });
      return check;
    });
    const outcome = await onceSaved(
      durable,
      async (saved, late) => {
        if (saved.refusal) return;
        this.deps.metrics.enrollments.inc({ outcome: 'success' });
        await this.deps.audit
          .record({
            type: 'enrollment.succeeded',
            actor: { kind: 'agent', connectorId },
            remoteAddress,
            connectorId,
            groupId: saved.groupId,
            keyId: saved.keyId,
            details: {
              name: saved.repeat?.name ?? request.name ?? request.host.hostname,
              agentVersion: request.agentVersion,
              // An attempt of an enrollment already made, whose answer the agent had not received.
              ...(saved.repeat ? { repeated: true } : {}),
              // The agent heard STORE_UNAVAILABLE; its retry enrolls again as a repeat.
              ...savedLate(late),
            },
          })
          // The enrollment is saved: an agent refused now would only enroll again, as a repeat, until
          // the audit log is back.
          .catch(unlessAuditNotWritten);
      },
      this.deps.logger,
    );
    if (outcome.refusal) return this.refuse(outcome, remoteAddress);

    this.deps.logger.info(
      {
        connectorId,
        groupId: outcome.groupId,
        keyId: outcome.keyId,
        remoteAddress,
        repeated: !!outcome.repeat,
      },
      outcome.repeat ? 'connector enrolled again by a retry of its enrollment' : 'connector enrolled',
    );
    return {
      connectorId,
      groupId: outcome.groupId!,
      identityToken: identity.token,
      identityExpiresAt: new Date(identity.expiresAt).toISOString(),
    };
  }

  /**
   * Whether `presented` is a key this deployment made (its secret matches the record its id names),
   * current or not: a guess is not. The failure limits are for guesses (AbuseLimiter.enrollAttempt).
   */
  madeByThisServer(presented: string): boolean {
    const keyId = keyIdOf(presented, PROVISIONING_KEY_PREFIX, 'pk');
    if (!keyId) return false;
    return this.deps.store.read((view) => {
      const record = view.get('provisioningKeys', keyId);
      return record !== undefined && keyMatches(presented, record.hash);
    });
  }

  private checkKey(view: StoreView, presented: string, keyId: string | null, jkt: string): KeyCheck {
    const record = keyId ? view.get('provisioningKeys', keyId) : undefined;
    if (!record || !keyMatches(presented, record.hash))
      return { keyId: null, groupId: null, refusal: 'KEY_INVALID' };
    const found = { keyId: record.id, groupId: record.groupId };
    const group = view.get('groups', record.groupId);
    if (!group) return { ...found, refusal: 'KEY_INVALID' };
    if (record.supersededAt !== null || group.currentKeyId !== record.id)
      return { ...found, refusal: 'KEY_SUPERSEDED' };
    // A retry of an enrollment already made: a key good for its first attempt may have run out since.
    const earlier = view.get('connectors', enrolledConnectorId(record.groupId, jkt));
    if (earlier) {
      // A revoke regenerates the group's key, so a revoked one is refused above; this is for the
      // same key pair enrolled with another key of the group, which a retry never is.
      if (earlier.enrolledWithKeyId !== record.id || earlier.status === 'revoked')
        return { ...found, refusal: 'KEY_INVALID' };
      if (group.status === 'disabled') return { ...found, refusal: 'GROUP_DISABLED' };
      return { ...found, refusal: null, repeat: earlier };
    }
    const state = keyState(record, this.deps.clock.now());
    if (state === 'expired') return { ...found, refusal: 'KEY_EXPIRED' };
    if (state === 'exhausted') return { ...found, refusal: 'KEY_EXHAUSTED' };
    if (group.status === 'disabled') return { ...found, refusal: 'GROUP_DISABLED' };
    return { ...found, refusal: null };
  }

  /**
   * Why an enrollment through `serverUrl` must be refused, or null: the agent's sessions name the URL
   * it was given, and a server that knows its public URL refuses every proof naming another one. Let
   * through, the enrollment would use the key (a single-use key's only use) for an identity that
   * could never connect there, and sit "never connected" until the pending sweep deleted it.
   */
  private wrongServerUrl(serverUrl: string | undefined): string | null {
    const expected = this.deps.publicOrigin;
    if (expected === null || serverUrl === undefined) return null;
    const given = originOf(serverUrl);
    if (given === expected) return null;
    return (
      `This server is reached at ${expected} (its --public-url), not at ${given ?? 'the URL the agent was given'}: ` +
      `every session through that URL would be refused. Enroll with --server ${expected}; the key was not used.`
    );
  }

  private async refuse(check: KeyCheck, remoteAddress: string, message?: string): Promise<never> {
    const reason = check.refusal!;
    const security = SECURITY_REASONS.has(reason);
    this.deps.metrics.enrollments.inc({ outcome: reason });
    // Coalesced per address and reason (a stranger can retry at will); security ones are counted too.
    await this.deps.audit.recordRefusal({
      type: 'enrollment.refused',
      actor: { kind: 'agent', connectorId: null },
      outcome: 'refused',
      reason,
      security,
      remoteAddress,
      groupId: check.groupId,
      keyId: check.keyId,
    });
    const log = { reason, keyId: check.keyId, groupId: check.groupId, remoteAddress };
    if (security) this.deps.logger.warn({ ...log, security: true }, 'enrollment with a no-longer-valid key');
    else this.deps.logger.info(log, 'enrollment refused');
    throw new DomainError(reason, message);
  }
}
