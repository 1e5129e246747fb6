import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import { DomainError } from '../../../shared/errors.js';
import { systemClock } from '../../clock.js';
import { type RecordView, setRecord, withFields } from '../record-tables.js';
import type { StoreData } from '../records.js';
import {
  SECTIONS,
  type SectionRecords,
  type Store,
  type StoreSection,
  type StoreSnapshot,
  type StoreTransaction,
} from '../store.js';
import { ChangeFeed } from './change-feed.js';
import type { ChangeRow, FeedPosition } from './changes.js';
import { checkOut } from './checked-out.js';
import {
  CommitOutcomeUnknown,
  type CommitRequest,
  commitChange,
  type RecordTouch,
  WriteConflict,
} from './commit.js';
import { commitRequestOf } from './commit-batch.js';
import { refusalsOf } from './commit-refusals.js';
import { connectionOptions } from './connect.js';
import { DEFAULT_FEED_RETENTION, FeedUpkeep } from './feed-retention.js';
import { type LoadedState, loadState } from './load-state.js';
import { prepareDatabase } from './migrate.js';
import type { PendingTouches } from './pending-touches.js';
import { COMMIT_WAIT_MS, type PgStoreOptions } from './pg-store-options.js';
import { answeredWithin, type Pending, type QueuedTransactions } from './queued-transactions.js';
import type { RemoteChange, RemoteChangeListener } from './remote-changes.js';
import { ReplicaMemory } from './replica-memory.js';
import { touchPropagates } from './touch-propagation.js';
import { TrackedTransaction } from './tracked-transaction.js';

/**
 * How long `caughtUp` waits, for the feed read and then for a commit of this replica in flight to
 * end, before going on with what memory holds (the database may be unreachable: readiness says so).
 */
const CAUGHT_UP_WAIT_MS = 1000;

export type { PgStoreOptions } from './pg-store-options.js';
export type { RemoteChange, RemoteChangeListener } from './remote-changes.js';

/**
 * The Store on PostgreSQL, for several server replicas on one database. Each replica holds the whole
 * state in memory, as the embedded store does, so reads and the synchronous check-and-change of a
 * transaction are unchanged; what differs is what "durable" means and who else writes.
 *
 * A transaction applies at once to memory; the transactions of a turn (and all that arrive while a
 * commit is under way) are committed together as one PostgreSQL transaction (group commit), with an
 * optimistic check: the versions of the records they read, and for sections they listed, that no other
 * replica changed the section since the feed position memory is at (commit.ts; rows are locked in key
 * order, so colliding commits queue rather than deadlock). `transact` resolves once COMMIT returned.
 * When another replica got there first, the pending transactions are undone (newest first), memory
 * catches up from the change feed and their functions run again in order: a function that now throws
 * rejects its own caller; the others commit with the next attempt. So transaction functions must be
 * free of side effects beyond their return value: they may run more than once.
 *
 * Changes committed by other replicas arrive through the change feed and apply by version (pending
 * local transactions are undone first and run again after), and `onRemoteChange` hears of them.
 */
export class PgStore implements Store {
  /** The records, their versions and feed position, the queued transactions and touches. */
  private readonly memory: ReplicaMemory;
  private readonly data: StoreData;
  private readonly view: RecordView;
  readonly feed: ChangeFeed;
  readonly feedUpkeep: FeedUpkeep;
  readonly origin: string;
  private readonly queue: QueuedTransactions;
  private committing = false;
  private flushing: Promise<void> | null = null;
  private readonly touches: PendingTouches;
  private touchTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private remoteListener: RemoteChangeListener | undefined;
  /** Told each time the whole state was loaded again after a gap in the feed. */
  onReload: (() => void) | undefined;
  /**
   * Told, for each other replica's commit as it is applied here, how long ago its transaction
   * began (ms; the database's clock against this replica's): the commit, its notification, the
   * feed read and any wait for this replica's own commit in flight, the path a revoke made through
   * another replica takes before the session held here hears of it.
   */
  onForeignChangeLag: ((ms: number) => void) | undefined;
  readonly stats = {
    transactions: 0,
    commits: 0,
    conflicts: 0,
    failedCommits: 0,
    remoteChanges: 0,
    /** Whole-state loads after rows this replica had not read were pruned. */
    reloads: 0,
  };

  private readonly commitWaitMs: number;

  private constructor(
    private readonly pool: pg.Pool,
    url: string,
    state: LoadedState,
    private readonly options: PgStoreOptions,
  ) {
    this.commitWaitMs = options.commitWaitMs ?? COMMIT_WAIT_MS;
    this.origin = options.origin ?? `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
    this.memory = new ReplicaMemory(state, this.origin);
    ({ data: this.data, view: this.view, queue: this.queue, touches: this.touches } = this.memory);
    this.remoteListener = options.onRemoteChange;
    this.feed = new ChangeFeed({
      pool,
      connectionString: url,
      from: state.position,
      horizon: state.horizon,
      // A failover between this load and the feed's first read is a gap too.
      serverStartedAt: state.serverStartedAt,
      ownOrigin: this.origin,
      pollMs: options.pollMs,
      onChanges: (rows, position) => this.changesArrived(rows, position),
      onError: (error) => options.logger?.warn({ err: error }, 'change feed: read or listener failed'),
      // The reload runs in the commit loop, where no commit is in flight.
      onGap: () => this.flushSoon(),
    });
    this.feedUpkeep = new FeedUpkeep({
      pool,
      origin: this.origin,
      clock: options.clock ?? systemClock,
      retention: options.feedRetention ?? DEFAULT_FEED_RETENTION,
      position: () => this.feed.readPosition,
      reportEveryMs: options.feedReportMs,
      pruneEveryMs: options.feedPruneMs,
      onError: (error) => options.logger?.warn({ err: error }, 'change feed: position or prune failed'),
    });
  }

  /** Connects, brings the schema up to date, loads every record and starts following the feed. */
  static async open(url: string, options: PgStoreOptions = {}): Promise<PgStore> {
    const pool = new pg.Pool({ ...connectionOptions(url), max: options.poolSize ?? 8 });
    // An idle client's error is emitted on the pool: unheard, it would end the process.
    pool.on('error', (error) => options.logger?.warn({ err: error }, 'PostgreSQL connection lost'));
    try {
      const { client, release } = await checkOut(pool);
      try {
        await prepareDatabase(client, options.logger);
      } finally {
        release();
      }
      const store = new PgStore(pool, url, await loadState(pool), options);
      try {
        await store.feed.start();
        await store.feedUpkeep.start();
      } catch (error) {
        await store.feed.stop();
        throw error;
      }
      return store;
    } catch (error) {
      await pool.end().catch(() => {});
      throw error;
    }
  }

  /** Sets the listener of changes made by other replicas (replacing the one given at open). */
  setRemoteChangeListener(listener: RemoteChangeListener | undefined): void {
    this.remoteListener = listener;
  }

  read<T>(fn: (view: RecordView) => T): T {
    return fn(this.view);
  }

  transact<T>(fn: (tx: StoreTransaction) => T): Promise<T> {
    if (this.closed) return Promise.reject(new DomainError('STORE_UNAVAILABLE', 'The store is closed.'));
    const tx = new TrackedTransaction(this.data);
    let result: T;
    try {
      result = fn(tx);
    } catch (error) {
      tx.rollback();
      return Promise.reject(error);
    } finally {
      tx.end();
    }
    this.stats.transactions++;
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, tx, result, ...answeredWithin(this.commitWaitMs, resolve, reject) });
      this.flushSoon();
    });
  }

  /**
   * Touched fields are written lazily (with the next commit, or within `touchFlushMs`) as a merge into
   * the stored record. The loss-tolerant ones (last seen, last used) go without a new version and
   * without a feed row: other replicas see them at their next start or with the record's next
   * versioned write from this replica, and a versioned write of the record from another replica
   * carries that replica's values of them. The few other replicas must hear of (a renewed identity,
   * host facts: touch-propagation.ts) give the record a new version and a feed op, one per record
   * per commit however often it was touched.
   */
  touch<S extends StoreSection>(section: S, id: string, fields: Partial<SectionRecords[S]>): boolean {
    const current = this.view.get(section, id);
    if (!current) return false;
    const next = withFields(current as SectionRecords[S], fields);
    if (!next) return true;
    setRecord(this.data, section, id, next);
    this.touches.note(
      section,
      id,
      fields as Record<string, unknown>,
      touchPropagates(section, fields, current),
    );
    if (!this.touchTimer && !this.closed) {
      this.touchTimer = setTimeout(() => {
        this.touchTimer = null;
        this.flushSoon();
      }, this.options.touchFlushMs ?? 1000);
      this.touchTimer.unref();
    }
    return true;
  }

  /** References to every record now: records are replaced, never changed (as in JournalStore). */
  snapshot(): StoreSnapshot {
    return { sections: SECTIONS.map((section) => [section, this.view.list(section)]), release: () => {} };
  }

  /**
   * Reads the change feed now. What it brings is applied at once, or, while a commit of this
   * replica is in flight, when that commit ends: waited for here. At most CAUGHT_UP_WAIT_MS in all.
   */
  async caughtUp(): Promise<void> {
    if (this.closed) return;
    const deadline = Date.now() + CAUGHT_UP_WAIT_MS;
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, CAUGHT_UP_WAIT_MS);
    });
    await Promise.race([this.feed.readNow().catch(() => {}), waited]);
    clearTimeout(timer);
    while (this.memory.waiting > 0 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 5));
  }

  async close(): Promise<void> {
    if (this.touchTimer) clearTimeout(this.touchTimer);
    this.touchTimer = null;
    this.closed = true;
    await this.flushing;
    await this.commitQueued();
    await this.feed.stop();
    await this.feedUpkeep.stop();
    await this.pool.end();
  }

  private flushSoon(): void {
    if (this.flushing) return;
    // The next turn: every transaction of this one joins the same commit.
    this.flushing = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.flushLoop())
      .catch((error) => this.options.logger?.warn({ err: error }, 'store commit loop failed'))
      .finally(() => {
        this.flushing = null;
        if (this.queue.length > 0) this.flushSoon();
      });
  }

  private async flushLoop(): Promise<void> {
    // Bounded by the callers: each round commits (or fails) every transaction queued before it.
    do await this.commitQueued();
    while (this.queue.length > 0);
  }

  /**
   * Commits every queued transaction (and pending touches) as one, retrying after conflicts: after
   * two lost rounds it commits alone (commit.ts COMMIT_LOCK), catching up once no one else can commit.
   */
  private async commitQueued(): Promise<void> {
    const maxRounds = this.options.maxRounds ?? 20;
    for (let round = 1; ; round++) {
      if (this.feed.gapped) {
        try {
          await this.reload();
        } catch (error) {
          this.failQueued(error);
          return;
        }
      }
      let batch: Pending[] = [];
      let touches: RecordTouch[] = [];
      const prepare = (): CommitRequest => {
        batch = this.queue.batch();
        // A propagated touch counts as a read of the record at the version memory holds.
        touches = this.touches
          .take()
          .map((touch) =>
            touch.propagate ? { ...touch, version: this.memory.versions.of(touch.section, touch.id) } : touch,
          );
        return commitRequestOf(
          batch.map((pending) => pending.tx),
          {
            origin: this.origin,
            view: this.view,
            versions: this.memory.versions,
            position: this.memory.position,
            touches,
          },
        );
      };
      const alone = round > 2;
      const request = alone ? null : prepare();
      if (this.queue.length === 0 && this.touches.size === 0 && batch.length === 0 && touches.length === 0)
        return;
      this.committing = true;
      try {
        const { seq, ops, touched, kept } = await commitChange(
          this.pool,
          request ??
            (async () => {
              await this.catchUp();
              return prepare();
            }),
          this.options.lostCommitAskMs,
        );
        this.stats.commits++;
        for (const op of ops) this.memory.versions.committed(op, true);
        for (const [section, id] of touched) this.memory.versions.touched(section, id, seq);
        this.memory.keepFresher(kept);
        this.queue.committed(batch.length);
        this.committing = false;
        this.applyInbox(false);
        return;
      } catch (error) {
        this.touches.giveBack(touches);
        if (error instanceof WriteConflict && round < maxRounds) {
          this.stats.conflicts++;
          await this.catchUp();
          this.committing = false;
          continue;
        }
        this.committing = false;
        // Saved or not, memory may differ from the database (the change undone below, yet kept
        // there): everything is read again, asked for by the feed's next read (within its poll)
        // and at each read after until a load works.
        if (error instanceof CommitOutcomeUnknown)
          this.feed.markGap('a commit got no answer from the database, so whether it was saved is unknown');
        this.failQueued(error);
        this.applyInbox(false);
        return;
      }
    }
  }

  /**
   * Reads the feed now and applies it, queued transactions run again over it. The caller is
   * committing: what the read brings waits in the inbox until this applies it.
   */
  private async catchUp(): Promise<void> {
    await this.feed.readNow();
    if (!this.feed.gapped) return this.applyInbox(true);
    // The next round tries again (and fails the batch if the database cannot be read).
    await this.reload().catch((error) =>
      this.options.logger?.warn({ err: error }, 'change feed: reloading the state failed'),
    );
  }

  /**
   * Loads the whole state again after rows this replica had not read were pruned from the feed (it
   * was cut off or stopped for longer than the feed keeps rows), and tells the listener of every
   * record that differs, as changes from other replicas. Runs only where no commit is in flight (the
   * commit loop), so the snapshot holds each of this replica's commits or none is missing from it.
   */
  private async reload(): Promise<void> {
    // Called only while the feed is gapped, which says why.
    const why = this.feed.gapReason;
    const loaded = await loadState(this.pool);
    const changes = this.memory.replace(loaded);
    this.feed.resume(loaded.position, loaded.horizon, loaded.serverStartedAt);
    this.stats.reloads++;
    this.onReload?.();
    this.options.logger?.warn(
      { changed: changes.length },
      `change feed: ${why}; loaded the whole state again`,
    );
    this.tell(changes);
  }

  /** The database did not take the commit: memory returns to the committed state, callers hear why. */
  private failQueued(error: unknown): void {
    this.stats.failedCommits++;
    this.options.logger?.warn({ err: error }, 'store commit failed');
    this.queue.undo();
    this.queue.failAll(refusalsOf(error, this.pool, () => this.closed));
  }

  private changesArrived(rows: ChangeRow[], position: FeedPosition): void {
    this.tell(this.memory.arrived(rows, position, this.committing, this.onForeignChangeLag));
  }

  /** Applies the rows that waited for a commit (all queued transactions run again with `rerun`). */
  private applyInbox(rerun: boolean): void {
    this.tell(this.memory.applyInbox(rerun, this.onForeignChangeLag));
  }

  private tell(changes: RemoteChange[]): void {
    this.stats.remoteChanges += changes.length;
    if (changes.length === 0) return;
    try {
      this.remoteListener?.(changes);
    } catch (error) {
      this.options.logger?.warn({ err: error }, 'remote change listener failed');
    }
  }
}
