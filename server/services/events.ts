import { EventEmitter } from 'node:events';

/** Every state change the live side must act on. */
export type DomainEvent =
  | { type: 'connector.status'; connectorId: string; status: 'enabled' | 'disabled' }
  | { type: 'connector.revoked'; connectorId: string; reason: string | null }
  | { type: 'connector.deleted'; connectorId: string }
  | { type: 'group.status'; groupId: string; status: 'enabled' | 'disabled'; connectorIds: string[] }
  | { type: 'group.deleted'; groupId: string; connectorIds: string[] };

/**
 * When a listener hears of a change:
 * - `applied`: the change is in memory (every read sees it) but may not be on disk yet; if its
 *   write fails it is undone. Security actions (revoke, delete) are announced here, so the session
 *   hub cuts an agent off without waiting for a write that grows with the whole file.
 * - `committed`: the change is durable. Every change is announced here once its write succeeded
 *   (after `applied`, never instead of it): what must not act on a change that may be undone
 *   listens here.
 */
export type EventMoment = 'applied' | 'committed';

/** A typed, synchronous event bus between services and the session hub. */
export class DomainEvents {
  private readonly emitter = new EventEmitter();

  /** Announces a change that is in memory and not yet durable; `committed` must follow if it is saved. */
  applied(event: DomainEvent): void {
    this.emitter.emit('applied', event);
  }

  /** Announces that a change announced `applied` is durable. */
  committed(event: DomainEvent): void {
    this.emitter.emit('committed', event);
  }

  /** Announces a change that was applied and saved in one step (`applied`, then `committed`). */
  saved(event: DomainEvent): void {
    this.applied(event);
    this.committed(event);
  }

  on(moment: EventMoment, listener: (event: DomainEvent) => void): () => void {
    this.emitter.on(moment, listener);
    return () => this.emitter.off(moment, listener);
  }
}
