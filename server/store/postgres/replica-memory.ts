import { RecordView, setRecord } from '../record-tables.js';
import type { StoreData } from '../records.js';
import type { ChangeRow, FeedPosition } from './changes.js';
import type { KeptFields } from './commit.js';
import type { CommittedVersions } from './committed-versions.js';
import type { LoadedState } from './load-state.js';
import { PendingTouches } from './pending-touches.js';
import { QueuedTransactions } from './queued-transactions.js';
import { applyRemoteOps, newerRemoteOps, type RemoteChange, replaceState } from './remote-changes.js';
import { withFresher } from './touch-propagation.js';

/**
 * What a replica holds in memory, and how other replicas' changes enter it: the records, the
 * versions they were committed at, the feed position memory is at, the transactions applied and not
 * yet committed (undone beneath a change from elsewhere and run again over it), the touches not yet
 * written, and the feed rows that came while a commit was in flight (applied once it ends). PgStore
 * commits from it and tells the listener of the changes these methods return.
 */
export class ReplicaMemory {
  readonly data: StoreData;
  readonly view: RecordView;
  versions: CommittedVersions;
  /** The feed position memory is at (besides this replica's own commits). */
  position: FeedPosition;
  /** Transactions applied to memory and not yet committed, in the order they ran. */
  readonly queue: QueuedTransactions;
  readonly touches = new PendingTouches();
  /** Feed rows that came while a commit was under way: applied once its outcome is known. */
  private inbox: { rows: ChangeRow[]; position: FeedPosition | null } = { rows: [], position: null };

  constructor(
    state: LoadedState,
    /** This replica's origin: its own rows in the feed are in memory already. */
    private readonly origin: string,
  ) {
    this.data = state.data;
    this.view = new RecordView(state.data);
    this.queue = new QueuedTransactions(state.data);
    this.versions = state.versions;
    this.position = state.position;
  }

  /** Feed rows not applied yet (a commit is in flight). */
  get waiting(): number {
    return this.inbox.rows.length;
  }

  /** Rows the feed brought: applied now (the changes returned), or, while `committing`, kept for later. */
  arrived(rows: ChangeRow[], position: FeedPosition, committing: boolean, lag?: (ms: number) => void) {
    this.inbox.rows.push(...rows);
    this.inbox.position = position;
    return committing ? [] : this.applyInbox(false, lag);
  }

  /**
   * Applies what the feed brought: this replica's own commits are in memory already; another
   * replica's change applies when it is newer than the record held. Queued transactions are undone
   * first and run again over the result (always, with `rerun`: after a conflict). `lag` hears, for
   * each other replica's commit, how long ago its transaction began.
   */
  applyInbox(rerun: boolean, lag?: (ms: number) => void): RemoteChange[] {
    const { rows, position } = this.inbox;
    this.inbox = { rows: [], position: null };
    if (position) this.position = position;
    if (lag) {
      const now = Date.now();
      for (const row of rows)
        if (row.origin !== this.origin && row.committedAt > 0) lag(now - row.committedAt);
    }
    const newer = newerRemoteOps(rows, this.origin, this.versions);
    if (newer.length === 0 && !rerun) return [];
    this.queue.undo();
    const changes = applyRemoteOps(this.data, this.versions, newer);
    this.touches.reapply(this.data, changes);
    this.queue.rerun();
    return changes;
  }

  /**
   * Takes in the local fields the database kept over this replica's whole-record writes (another
   * replica's touches were newer: FRESHER_WINS), unless memory has newer ones by now.
   */
  keepFresher(kept: readonly KeptFields[]): void {
    for (const { section, id, fields } of kept) {
      const current = this.view.get(section, id);
      const next = current && withFresher(section, current, fields);
      if (next) setRecord(this.data, section, id, next);
    }
  }

  /**
   * Takes the whole state loaded again (after a gap in the feed) in place of what memory held, the
   * queued transactions run again over it; returns every record that differs. What the feed brought
   * before was committed before the load: the snapshot has it.
   */
  replace(loaded: LoadedState): RemoteChange[] {
    this.queue.undo();
    const changes = replaceState(this.data, this.versions, loaded);
    this.versions = loaded.versions;
    this.position = loaded.position;
    this.inbox = { rows: [], position: null };
    this.touches.reapply(this.data, changes);
    this.queue.rerun();
    return changes;
  }
}
