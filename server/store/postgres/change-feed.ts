import pg from 'pg';
import {
  CHANGES_CHANNEL,
  type ChangeRow,
  type FeedPosition,
  missedPrunedRows,
  readChanges,
} from './changes.js';
import { connectionOptions } from './connect.js';

export interface ChangeFeedOptions {
  /** Reads run on the pool; the listener has a connection of its own (never LISTEN on a pooled one). */
  pool: pg.Pool;
  connectionString: string;
  from: FeedPosition;
  /** The reader's own origin: its rows come with their deletions only (see `readChanges`). */
  ownOrigin?: string;
  /** The pruned horizon `from` accounts for (read with it); unknown: any horizon at `from` is a gap. */
  horizon?: string;
  /**
   * When the PostgreSQL server `from` was read on started (pg_postmaster_start_time): a first read
   * that reaches another is a gap, as any later one is. Unknown: the first read sets it.
   */
  serverStartedAt?: string;
  /**
   * Hands over new changes, in sequence order, each exactly once, with the position the reader is at
   * once it has them (a store that holds these changes is at that position).
   */
  onChanges: (rows: ChangeRow[], position: FeedPosition) => void;
  /** How often to read even without a notification (a lost one costs at most this long). @default 1000 */
  pollMs?: number;
  /** First wait before reconnecting a lost listener; doubles up to 5 s. @default 100 */
  reconnectMs?: number;
  onError?: (error: Error) => void;
  /**
   * Rows past the position were pruned before they were read: the reader must load the whole state
   * and `resume` from there. Until then the feed reads nothing and says so again at every read.
   */
  onGap?: () => void;
}

/**
 * Follows the change table. A NOTIFY wakes it within a millisecond of a commit; a read every
 * `pollMs` catches what a lost notification or a dropped listener connection missed; a read after the
 * listener reconnects catches up at once. Reads never overlap: a wake-up during a read asks for one
 * more read after it.
 */
export class ChangeFeed {
  private position: FeedPosition;
  private horizon: string | undefined;
  private listener: pg.Client | undefined;
  private reading: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelay: number;
  /** When the last read succeeded (epoch ms); readiness checks how far behind it is. */
  lastReadAt = 0;
  /** Whether the listener connection is up. */
  listening = false;
  /** Rows it had not read were pruned: it waits for `resume` (see `onGap`). */
  gapped = false;
  /** Why the reader must load the whole state, while `gapped`. */
  gapReason = '';
  /** When the PostgreSQL server the last read reached started (see readLoop). */
  private serverStartedAt: string | undefined;

  constructor(private readonly options: ChangeFeedOptions) {
    this.position = options.from;
    this.horizon = options.horizon;
    this.serverStartedAt = options.serverStartedAt;
    this.reconnectDelay = options.reconnectMs ?? 100;
  }

  async start(): Promise<void> {
    await this.listen();
    await this.readNow();
    this.pollTimer = setInterval(() => void this.readNow().catch(() => {}), this.options.pollMs ?? 1000);
    this.pollTimer.unref();
  }

  /** Reads now (or once more right after the read in progress); resolves when that read is done. */
  readNow(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = this.readLoop().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  /** The position the reads reached: every change before it was handed over. */
  get readPosition(): FeedPosition {
    return this.position;
  }

  /**
   * The reader's state may differ from the database for a reason of its own (a commit whose outcome
   * is unknown): as after a gap, it is told at every read (`onGap`) until it loads and resumes.
   */
  markGap(reason: string): void {
    this.gapped = true;
    this.gapReason = reason;
  }

  /** Goes on from a position the reader holds all changes before (a whole state loaded after a gap). */
  resume(position: FeedPosition, horizon: string, serverStartedAt: string): void {
    this.position = position;
    this.horizon = horizon;
    this.serverStartedAt = serverStartedAt;
    this.gapped = false;
  }

  /** The listener's backend pid (tests end it with pg_terminate_backend to drop the connection). */
  get listenerPid(): number | undefined {
    return (this.listener as unknown as { processID?: number } | undefined)?.processID;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pollTimer);
    clearTimeout(this.reconnectTimer);
    await this.reading?.catch(() => {});
    const listener = this.listener;
    this.listener = undefined;
    this.listening = false;
    await listener?.end().catch(() => {});
  }

  private async readLoop(): Promise<void> {
    // Bounded: one read, plus one for each wake-up that came during it, at most 100 in a row.
    for (let reads = 0; reads < 100; reads++) {
      this.again = false;
      if (this.gapped) {
        this.options.onGap?.();
        return;
      }
      try {
        const { rows, next, horizon, serverStartedAt } = await readChanges(
          this.options.pool,
          this.position,
          this.options.ownOrigin,
        );
        const before = this.serverStartedAt;
        this.serverStartedAt = serverStartedAt;
        // Another server than the last read's: a standby promoted, which may lack commits this
        // reader applied and hands out again transaction ids it had passed. A row of such an id
        // sorts below the position, and this read (from the old position) would skip it for good;
        // the position itself means nothing there. A plain restart lands here too, at the cost
        // of one load.
        if (before !== undefined && serverStartedAt !== before) {
          const reason = 'the database server restarted or failed over since the last read';
          if (this.options.onGap) {
            this.gapped = true;
            this.gapReason = reason;
            this.options.onGap();
            return;
          }
          this.options.onError?.(new Error(`change feed: ${reason}`));
        }
        if (missedPrunedRows(this.position, horizon, this.horizon)) {
          if (this.options.onGap) {
            this.gapped = true;
            this.gapReason = 'changes this replica had not read were pruned';
            this.options.onGap();
            return;
          }
          this.options.onError?.(
            new Error('change feed: rows past this reader were pruned before it read them'),
          );
        }
        this.horizon = horizon;
        this.position = next;
        this.lastReadAt = Date.now();
        if (rows.length > 0) this.options.onChanges(rows, next);
      } catch (error) {
        this.options.onError?.(error as Error);
        return;
      }
      if (!this.again || this.stopped) return;
    }
  }

  private async listen(): Promise<void> {
    const client = new pg.Client(connectionOptions(this.options.connectionString));
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('listener connection ended')));
    // The payload is not read (any role that may connect can notify): a notification only wakes a
    // read of the table, coalesced with the one in progress.
    client.on('notification', () => void this.readNow().catch(() => {}));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGES_CHANNEL}`);
    } catch (error) {
      // Not yet the listener, so `lost` ignores it: ended here, or each failed retry left a connection open.
      client.end().catch(() => {});
      throw error;
    }
    this.listener = client;
    this.listening = true;
    this.reconnectDelay = this.options.reconnectMs ?? 100;
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.listener !== client || this.stopped) return;
    this.listener = undefined;
    this.listening = false;
    this.options.onError?.(error);
    client.end().catch(() => {});
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    this.reconnectTimer = setTimeout(async () => {
      try {
        await this.listen();
        await this.readNow(); // catch up on whatever was committed while it was away
      } catch (error) {
        this.options.onError?.(error as Error);
        this.reconnectDelay = Math.min(this.reconnectDelay * 2, 5000);
        this.scheduleReconnect();
      }
    }, this.reconnectDelay);
    this.reconnectTimer.unref();
  }
}
