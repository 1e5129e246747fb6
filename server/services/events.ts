import { EventEmitter } from 'node:events';

/** Every state change the live side must act on. Emitted after the change is durable. */
export type DomainEvent =
  | { type: 'connector.status'; connectorId: string; status: 'enabled' | 'disabled' }
  | { type: 'connector.revoked'; connectorId: string; reason: string | null }
  | { type: 'connector.deleted'; connectorId: string }
  | { type: 'group.status'; groupId: string; status: 'enabled' | 'disabled'; connectorIds: string[] }
  | { type: 'group.deleted'; groupId: string; connectorIds: string[] };

/** A typed, synchronous event bus between services and the session hub. */
export class DomainEvents {
  private readonly emitter = new EventEmitter();

  emit(event: DomainEvent): void {
    this.emitter.emit('event', event);
  }

  on(listener: (event: DomainEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
