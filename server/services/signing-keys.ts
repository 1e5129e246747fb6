import { DomainError } from '../../shared/errors.js';
import type { RequestMeta, ServiceDeps } from './deps.js';
import type { SigningKeyInfo, SigningKeyState } from './identity.js';
import { onceSaved, savedLate } from './once-saved.js';
import { iso } from './views.js';

/** How long a rotated-in key waits, published, before it signs: every JWKS cache has it by then. */
export const DEFAULT_ACTIVATE_IN_MS = 10 * 60_000;

export interface SigningKeyView {
  kid: string;
  algorithm: string;
  state: SigningKeyState;
  createdAt: string;
  /** When it became or becomes the signing key; null if it never does. */
  activateAt: string | null;
  retiredAt: string | null;
  /** Connectors not revoked whose current, unexpired identity it signed. */
  identities: number;
}

export interface RetireResult {
  key: SigningKeyView;
  /** Connectors that held a current identity signed by it when it was retired (non-zero only with force). */
  identities: number;
  /** Of those, how many were connected: they are pushed a new identity at once (IdentityRenewals). */
  connected: number;
}

/** Lists, rotates and retires the keys that sign identities, with how many current identities each signs. */
/** What SigningKeyService is built from. */
export type SigningKeyServiceDeps = Pick<
  ServiceDeps,
  'store' | 'audit' | 'clock' | 'identity' | 'presence' | 'logger'
>;

export class SigningKeyService {
  constructor(private readonly deps: SigningKeyServiceDeps) {}

  list(): SigningKeyView[] {
    const counts = this.identityCounts();
    return this.deps.identity.list().map((k) => this.view(k, counts.get(k.kid)?.total ?? 0));
  }

  /** A new key, published now, signing from `activateInMs` on (default 10 min). */
  async rotate(
    input: { activateInSeconds?: number | undefined },
    meta: RequestMeta,
  ): Promise<{ key: SigningKeyView; cancelled: string[] }> {
    const activateInMs =
      input.activateInSeconds === undefined ? DEFAULT_ACTIVATE_IN_MS : input.activateInSeconds * 1000;
    const { key, cancelled } = await onceSaved(
      this.deps.identity.rotate(activateInMs),
      (saved, late) =>
        this.deps.audit.record({
          type: 'signing_key.rotated',
          ...meta,
          keyId: saved.key.kid,
          details: { activateAt: iso(saved.key.activateAt), cancelled: saved.cancelled, ...savedLate(late) },
        }),
      this.deps.logger,
    );
    return { key: this.view(key, 0), cancelled };
  }

  /**
   * Retires a key. Refused with SIGNING_KEY_IN_USE while a connector that is not revoked holds a
   * current identity it signed, unless `force`: those connectors must then enroll again, except
   * connected ones, which the session hub renews with the active key.
   */
  async retire(
    input: { kid: string; force?: boolean | undefined },
    meta: RequestMeta,
  ): Promise<RetireResult> {
    const { total, connected } = this.identityCounts().get(input.kid) ?? { total: 0, connected: 0 };
    const known = this.deps.identity.list().find((k) => k.kid === input.kid);
    if (!known) throw new DomainError('SIGNING_KEY_NOT_FOUND');
    if (total > 0 && !input.force && known.state !== 'retired') {
      throw new DomainError(
        'SIGNING_KEY_IN_USE',
        `${total} connector(s) still hold a current identity signed by ${input.kid} (${connected} connected). ` +
          'Wait until `signing-keys list` shows 0 identities for it, or retire it with --force: ' +
          `${total - connected} disconnected agent(s) would then have to enroll again.`,
        { identities: total, connected },
      );
    }
    const retired = await onceSaved(
      this.deps.identity.retire(input.kid),
      (_saved, late) =>
        this.deps.audit.record({
          type: 'signing_key.retired',
          ...meta,
          keyId: input.kid,
          security: total > 0,
          details: { force: Boolean(input.force), identities: total, connected, ...savedLate(late) },
        }),
      this.deps.logger,
    );
    return { key: this.view(retired, total), identities: total, connected };
  }

  private view(k: SigningKeyInfo, identities: number): SigningKeyView {
    return {
      kid: k.kid,
      algorithm: k.algorithm,
      state: k.state,
      createdAt: iso(k.createdAt)!,
      activateAt: iso(k.activateAt),
      retiredAt: iso(k.retiredAt),
      identities,
    };
  }

  /** Per kid: connectors not revoked whose stored identity it signed and that has not expired. */
  private identityCounts(): Map<string, { total: number; connected: number }> {
    const now = this.deps.clock.now();
    return this.deps.store.read((view) => {
      const counts = new Map<string, { total: number; connected: number }>();
      for (const c of view.list('connectors')) {
        if (c.status === 'revoked' || !c.identity || c.identity.expiresAt <= now) continue;
        const entry = counts.get(c.identity.keyId) ?? { total: 0, connected: 0 };
        entry.total++;
        if (this.deps.presence.isConnected(c.id)) entry.connected++;
        counts.set(c.identity.keyId, entry);
      }
      return counts;
    });
  }
}
