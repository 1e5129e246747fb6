import { DomainError } from '../../shared/errors.js';
import type { AdminPrincipal, ApiKeyService } from './api-keys.js';
import type { AbuseLimiter } from './rate-limit.js';

/**
 * The admin key of a call (`path`) or console socket from `address`: its principal, or the error to
 * answer (ADMIN_KEY_INVALID, or RATE_LIMITED once the address used up its failed attempts; counted
 * and audited by the limiter). The key is checked after a read of the change feed, so the call sees
 * what was committed through any replica before it began (`authenticateCurrent`), except from an
 * address that used up its failed attempts: anyone can send keys, and a flood of made-up ones must
 * not turn into a flood of database reads. A valid key from such an address still works, checked
 * against what this replica holds.
 */
export async function authenticateAdmin(
  deps: { apiKeys: ApiKeyService; limiter: AbuseLimiter },
  presented: string | null,
  address: string,
  path: string,
): Promise<AdminPrincipal> {
  const blocked = await deps.limiter.adminAuthBlocked(address);
  try {
    return blocked ? deps.apiKeys.authenticate(presented) : await deps.apiKeys.authenticateCurrent(presented);
  } catch (error) {
    if (!(error instanceof DomainError && error.reason === 'ADMIN_KEY_INVALID')) throw error;
    throw await deps.limiter.adminAuthFailed(address, error, path);
  }
}
