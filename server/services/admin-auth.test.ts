import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { DomainError } from '../../shared/errors.js';
import { ManualClock } from '../clock.js';
import { MemoryStore } from '../store/memory-store.js';
import { authenticateAdmin } from './admin-auth.js';
import { ApiKeyService } from './api-keys.js';
import { MemoryAuditLog } from './audit.js';
import { systemMeta } from './deps.js';
import { AbuseLimiter, DEFAULT_RATE_LIMITS } from './rate-limit.js';

/** The in-memory store, counting the change-feed reads (`caughtUp`) it is asked for. */
class CountingStore extends MemoryStore {
  caughtUpCalls = 0;
  override async caughtUp(): Promise<void> {
    this.caughtUpCalls++;
  }
}

async function setup() {
  const clock = new ManualClock();
  const store = new CountingStore();
  const audit = new MemoryAuditLog(clock);
  const apiKeys = new ApiKeyService({ store, audit, clock, logger: pino({ level: 'silent' }) });
  const limiter = new AbuseLimiter(DEFAULT_RATE_LIMITS, audit);
  const { key } = await apiKeys.create({ name: 'ops', scope: 'admin' }, systemMeta);
  return { store, deps: { apiKeys, limiter }, key };
}

const reasonOf = (promise: Promise<unknown>) =>
  promise.then(
    () => 'accepted',
    (error) => (error instanceof DomainError ? error.reason : String(error)),
  );

describe('authenticateAdmin', () => {
  it('reads the change feed before checking a key, valid or not', async () => {
    const { store, deps, key } = await setup();
    expect((await authenticateAdmin(deps, key, '192.0.2.1', 'groups.list')).scope).toBe('admin');
    expect(await reasonOf(authenticateAdmin(deps, 'cak_made_up', '192.0.2.1', 'groups.list'))).toBe(
      'ADMIN_KEY_INVALID',
    );
    expect(store.caughtUpCalls).toBe(2);
  });

  it('an address past its failed attempts gets no feed read, and its valid key still works', async () => {
    const { store, deps, key } = await setup();
    const failures = DEFAULT_RATE_LIMITS.adminAuthFailuresPerMinute;
    for (let i = 0; i < failures; i++)
      expect(await reasonOf(authenticateAdmin(deps, `cak_guess_${i}`, '192.0.2.66', 'groups.list'))).toBe(
        'ADMIN_KEY_INVALID',
      );
    expect(store.caughtUpCalls).toBe(failures);
    for (let i = 0; i < 50; i++)
      expect(await reasonOf(authenticateAdmin(deps, `cak_more_${i}`, '192.0.2.66', 'groups.list'))).toBe(
        'RATE_LIMITED',
      );
    expect((await authenticateAdmin(deps, key, '192.0.2.66', 'groups.list')).scope).toBe('admin');
    expect(store.caughtUpCalls).toBe(failures);
    // Another address is not affected.
    await authenticateAdmin(deps, key, '192.0.2.7', 'groups.list');
    expect(store.caughtUpCalls).toBe(failures + 1);
  });
});
