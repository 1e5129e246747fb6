import type { Clock } from '../../clock.js';
import type { FeedRetention } from './feed-retention.js';
import type { RemoteChangeListener } from './remote-changes.js';

/** How long a caller waits for its commit by default (PgStoreOptions.commitWaitMs). */
export const COMMIT_WAIT_MS = 10_000;

/** How a PgStore runs: the replica's name, its bounds and periods, its clock, whom it tells. */
export interface PgStoreOptions {
  /** This replica's name in the change feed. @default host/pid/random: unique per open store */
  origin?: string;
  logger?: { warn(details: object, message: string): void };
  /** Told (synchronously, after memory has them) about records changed by other replicas. */
  onRemoteChange?: RemoteChangeListener;
  /** How long a `touch` may wait before it is written if no transaction writes it first. @default 1000 */
  touchFlushMs?: number;
  /** The change feed's read without a notification. @default 1000 */
  pollMs?: number;
  /** Commit attempts of one batch that lost to other replicas before it fails. @default 20 */
  maxRounds?: number;
  /** @default 8 */
  poolSize?: number;
  /**
   * How long a transaction's caller waits for its commit before it is answered STORE_UNAVAILABLE
   * ("may still be saved"); the commit itself goes on. @default COMMIT_WAIT_MS (10 s)
   */
  commitWaitMs?: number;
  /**
   * How long a commit whose COMMIT got no answer asks the database what became of it before it
   * calls it unknown (and reads the whole state again). @default LOST_COMMIT_ASK_MS (3 s)
   */
  lostCommitAskMs?: number;
  /** Heartbeats of the feed position and the change feed's retention compare with this. @default the system clock */
  clock?: Clock;
  /** How long the change feed keeps rows (feed-retention.ts). @default 10 minutes, at most 1 hour */
  feedRetention?: FeedRetention;
  /** How often this replica writes its feed position. @default 5000 */
  feedReportMs?: number;
  /** How often it tries to prune the feed. @default 60000 */
  feedPruneMs?: number;
}
