import type { IdentityStore, SavedIdentity } from './identity-store.js';
import type { AgentLogger } from './log.js';
import { cannotWrite } from './state-dir-problems.js';

/** How often a renewed identity the state dir would not take is tried again. */
export const SAVE_RETRY_MS = 60_000;

/**
 * Saves the identities a session renews. One the state dir will not take (full, read-only) is kept
 * in memory and tried again every `retryMs` and at exit (`flush`), so the one on disk does not run
 * out while a newer one is held: an agent restarted with only the old one after it expired would
 * wipe it as refused.
 */
export class IdentitySaver {
  private retry: NodeJS.Timeout | undefined;
  /** The expiry of the identity on disk while a newer one is not saved; null when all is saved. */
  private savedExpiresAt: string | null = null;

  constructor(
    private readonly store: Pick<IdentityStore, 'save' | 'dir'>,
    private readonly logger: Pick<AgentLogger, 'error' | 'info'>,
    /** The identity to save: the session's current one. */
    private readonly current: () => SavedIdentity,
    private readonly retryMs = SAVE_RETRY_MS,
  ) {}

  /** Saves the current identity, which replaces one expiring at `onDiskExpiresAt`; false: kept for later. */
  async save(onDiskExpiresAt: string): Promise<boolean> {
    clearTimeout(this.retry);
    const identity = this.current();
    try {
      await this.store.save(identity);
    } catch (error) {
      if (this.savedExpiresAt === null)
        this.logger.error(
          cannotWrite(
            this.store.dir,
            error,
            `the renewed identity (expires ${identity.identityExpiresAt}) is kept in memory and saved again every minute and at exit; the one saved expires ${onDiskExpiresAt}`,
          ),
        );
      this.savedExpiresAt ??= onDiskExpiresAt;
      this.retry = setTimeout(() => void this.save(this.savedExpiresAt ?? onDiskExpiresAt), this.retryMs);
      this.retry.unref();
      return false;
    }
    if (this.savedExpiresAt !== null)
      this.logger.info('renewed identity saved', { expiresAt: identity.identityExpiresAt });
    this.savedExpiresAt = null;
    return true;
  }

  /** At exit: a last try for an identity still only in memory. */
  async flush(): Promise<void> {
    if (this.savedExpiresAt !== null) await this.save(this.savedExpiresAt);
    this.stop();
  }

  stop(): void {
    clearTimeout(this.retry);
  }
}
