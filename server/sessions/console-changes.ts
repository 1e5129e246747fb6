import type { ChangedRecord } from '../store/observed-store.js';

/**
 * What `console.changes` yields: the ids of groups and connectors whose record or live connection
 * changed since the last batch, or `resync: true` (and no ids) when too many did: the console then
 * fetches again whatever it shows.
 */
export interface ConsoleBatch {
  groups: string[];
  connectors: string[];
  resync: boolean;
}

export interface ConsoleChangesOptions {
  /** The group a connector belongs to now (null once it is gone): its counts changed with it. */
  groupOf(connectorId: string): string | null;
  /** The shortest time between two batches to one subscriber. @default 250 */
  windowMs?: number | undefined;
  /** Ids in one batch past which it becomes a resync. @default 200 */
  maxIds?: number | undefined;
  /**
   * After a resync the next window doubles, up to this, until a window passes without one: a fleet
   * reconnecting for seconds makes a few resyncs, not one refetch every 250 ms. @default 2000
   */
  maxWindowMs?: number | undefined;
}

/** One `console.changes` subscription: what it has not been sent yet. */
class Subscriber {
  readonly groups = new Set<string>();
  readonly connectors = new Set<string>();
  resync = false;
  /** A batch made and not yet taken by the subscription (merged with the next when it is slow). */
  ready: ConsoleBatch | null = null;
  timer: NodeJS.Timeout | undefined;
  windowMs: number;
  wake: (() => void) | null = null;

  constructor(
    windowMs: number,
    private readonly maxIds: number,
  ) {
    this.windowMs = windowMs;
  }

  add(groupId: string | null, connectorId: string | null): void {
    if (this.resync) return;
    if (groupId !== null) this.groups.add(groupId);
    if (connectorId !== null) this.connectors.add(connectorId);
    if (this.groups.size + this.connectors.size > this.maxIds) this.overflow();
  }

  get pending(): boolean {
    return this.resync || this.groups.size > 0 || this.connectors.size > 0;
  }

  /** Moves what is pending into `ready` (merged with a batch not yet taken). */
  makeBatch(): boolean {
    const resync = this.resync || this.ready?.resync === true;
    if (!resync && this.ready) {
      for (const id of this.ready.groups) this.groups.add(id);
      for (const id of this.ready.connectors) this.connectors.add(id);
    }
    const tooMany = this.groups.size + this.connectors.size > this.maxIds;
    this.ready =
      resync || tooMany
        ? { groups: [], connectors: [], resync: true }
        : { groups: [...this.groups], connectors: [...this.connectors], resync: false };
    this.groups.clear();
    this.connectors.clear();
    this.resync = false;
    return this.ready.resync;
  }

  private overflow(): void {
    this.resync = true;
    this.groups.clear();
    this.connectors.clear();
  }
}

/** What a subscriber reads the feed through: ConsoleChanges itself, or a socket's bounded view of it. */
export interface ConsoleFeed {
  /** Yields batches until `signal` aborts. */
  stream(signal: AbortSignal): AsyncGenerator<ConsoleBatch>;
}

/**
 * The admin console's live feed: every change to a group's or connector's record (from this server
 * or, through its change feed, another replica) and every session that starts or ends (here or on
 * another replica) is noted for each open `console.changes` subscription and sent in coalesced
 * batches, at most one per window per subscriber. With no subscriber it costs one check per change.
 */
export class ConsoleChanges implements ConsoleFeed {
  private readonly subscribers = new Set<Subscriber>();
  private readonly windowMs: number;
  private readonly maxWindowMs: number;
  private readonly maxIds: number;

  constructor(private readonly o: ConsoleChangesOptions) {
    this.windowMs = o.windowMs ?? 250;
    this.maxWindowMs = Math.max(this.windowMs, o.maxWindowMs ?? 2000);
    this.maxIds = o.maxIds ?? 200;
  }

  /** Open subscriptions. */
  get size(): number {
    return this.subscribers.size;
  }

  /** Records changed (see ObservedStore): groups, their keys, connectors. API keys are not shown. */
  recordsChanged(changes: readonly ChangedRecord[]): void {
    if (this.subscribers.size === 0) return;
    for (const change of changes) {
      if (change.section === 'apiKeys') continue;
      this.note(change.groupId, change.section === 'connectors' ? change.id : null);
    }
  }

  /** A connector's session started or ended (here or on another replica). */
  connectionChanged(connectorId: string): void {
    if (this.subscribers.size === 0) return;
    this.note(this.o.groupOf(connectorId), connectorId);
  }

  /** Yields batches until `signal` aborts. */
  async *stream(signal: AbortSignal): AsyncGenerator<ConsoleBatch> {
    const subscriber = new Subscriber(this.windowMs, this.maxIds);
    this.subscribers.add(subscriber);
    const wakeOnAbort = () => subscriber.wake?.();
    signal.addEventListener('abort', wakeOnAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (!subscriber.ready) {
          await new Promise<void>((resolve) => {
            subscriber.wake = resolve;
          });
          subscriber.wake = null;
          continue;
        }
        const batch = subscriber.ready;
        subscriber.ready = null;
        yield batch;
      }
    } finally {
      clearTimeout(subscriber.timer);
      signal.removeEventListener('abort', wakeOnAbort);
      this.subscribers.delete(subscriber);
    }
  }

  private note(groupId: string | null, connectorId: string | null): void {
    for (const subscriber of this.subscribers) {
      subscriber.add(groupId, connectorId);
      if (!subscriber.timer) this.schedule(subscriber);
    }
  }

  private schedule(subscriber: Subscriber): void {
    subscriber.timer = setTimeout(() => {
      subscriber.timer = undefined;
      if (!subscriber.pending) {
        // A quiet window: the next change is sent after the shortest one again.
        subscriber.windowMs = this.windowMs;
        return;
      }
      const resync = subscriber.makeBatch();
      subscriber.windowMs = resync ? Math.min(subscriber.windowMs * 2, this.maxWindowMs) : this.windowMs;
      subscriber.wake?.();
      // Keeps the spacing: what comes in meanwhile waits for the end of the next window.
      this.schedule(subscriber);
    }, subscriber.windowMs);
    subscriber.timer.unref();
  }
}
