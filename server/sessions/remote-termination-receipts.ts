import type { Termination } from '../services/views.js';
import { PENDING } from './termination-receipts.js';

interface Waiter {
  settle(termination: Termination): void;
}

/**
 * Revokes made here of connectors whose session is on another replica, each waiting (up to the
 * bound the local receipts use) for that replica's confirmation: it records it on the connector,
 * and the record reaches this replica through the change feed. The other replica hears of the
 * revoke only once it is committed, so the bound counts from then.
 */
export class RemoteTerminationReceipts {
  private readonly waiting = new Map<string, Set<Waiter>>();

  constructor(private readonly timeoutMs: number) {}

  /**
   * What the agent of `connectorId`'s session elsewhere said: `confirmed` when its confirmation
   * arrives within the bound after `committed` resolves, `pending` otherwise (at once if `committed`
   * rejects: the revoke was not saved, so no other replica heard of it).
   */
  expect(connectorId: string, committed: Promise<unknown>): Promise<Termination> {
    return new Promise<Termination>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        settle: (termination) => {
          const waiters = this.waiting.get(connectorId);
          if (!waiters?.delete(waiter)) return;
          if (waiters.size === 0) this.waiting.delete(connectorId);
          clearTimeout(timer);
          resolve(termination);
        },
      };
      const waiters = this.waiting.get(connectorId) ?? new Set<Waiter>();
      waiters.add(waiter);
      this.waiting.set(connectorId, waiters);
      committed.then(
        () => {
          timer = setTimeout(() => waiter.settle(PENDING), this.timeoutMs);
          timer.unref();
        },
        () => waiter.settle(PENDING),
      );
    });
  }

  /** Whether a revoke or delete made here waits for `connectorId`'s confirmation. */
  isExpecting(connectorId: string): boolean {
    return this.waiting.has(connectorId);
  }

  /** Another replica recorded that `connectorId`'s host confirmed its revocation. */
  confirmed(connectorId: string, termination: Termination): void {
    for (const waiter of [...(this.waiting.get(connectorId) ?? [])]) waiter.settle(termination);
  }

  /** Settles every receipt as pending (server shutdown). */
  settleAll(): void {
    for (const waiters of [...this.waiting.values()])
      for (const waiter of [...waiters]) waiter.settle(PENDING);
  }
}
