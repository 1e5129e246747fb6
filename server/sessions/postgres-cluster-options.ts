import type pg from 'pg';
import type { Clock } from '../clock.js';
import type { ReplicaProcess } from '../services/replicas.js';
import type { WhenCutOff } from './cut-off.js';
import type { DatabaseClock } from './database-clock.js';
import type { ReapedSession } from './postgres-cluster-sql.js';

/** How a replica takes part in the cluster's sessions (see PostgresClusterSessions). */
export interface PostgresClusterSessionsOptions {
  /** Statements run on the pool; the listener has a connection of its own. */
  pool: pg.Pool;
  /**
   * Where the heartbeat (and what it does: registering again, releasing, reaping) runs: a pool of
   * its own, so that a heartbeat never waits behind a fleet's claims (a heartbeat late by 12 s ends
   * every session: CutOffWatch). @default `pool`
   */
  heartbeatPool?: pg.Pool;
  connectionString: string;
  /** This host's wall clock: when this replica last beat (readiness), and what sessions are dated by. */
  clock: Clock;
  /**
   * The clock the replicas compare between them (heartbeats, who is dead, when a session connected),
   * read from the database with each heartbeat. Without it `clock` serves, and replica hosts whose
   * clocks disagree by seconds take each other for dead (tests moving one clock for all go without).
   */
  databaseClock?: DatabaseClock;
  /** This replica's URL, as the replicas table shows it (--public-url; `listening` sets it otherwise). */
  url?: string | null;
  /** Which process this is, as the replicas table shows it. */
  process?: ReplicaProcess;
  /** Why this replica is not ready, besides its heartbeat (written with each heartbeat). @default none */
  problems?: () => string[];
  /** @default a random UUID */
  replicaId?: string;
  /** How often this replica says it is alive, looks at the others' and reaps the dead. @default 5000 */
  heartbeatMs?: number;
  /** A replica whose heartbeat is older than this is dead: its sessions count as gone. @default 15000 */
  deadAfterMs?: number;
  /**
   * What it does with its own sessions once no heartbeat has gone through for `cutOffAfterMs`
   * (see cut-off.ts). @default 'end-sessions'
   */
  whenCutOff?: WhenCutOff;
  /** The clock the silence is measured with (see CutOffWatch). @default performance.now */
  monotonic?: () => number;
  /** Told when it ended its sessions, cut off from the database: how many, and how long it was silent. */
  onCutOff?: (sessions: number, silentMs: number) => void;
  /**
   * How often the picture of the other replicas' sessions is checked against the table: a one-row
   * summary (their count and the sum of their claim numbers), and a full read when it differs or
   * at every FULL_RESYNC_EVERY-th check. @default 30000
   */
  resyncMs?: number;
  /** Claims (and releases) in one statement, at most. @default 1000 */
  batchSize?: number;
  /**
   * How long the first claim or release of a batch waits for others before the batch goes out. A
   * statement costs far more than a row here (a round trip and its system calls on this replica, a
   * notification read by every other one), and agents arrive spread out: waiting a little gathers a
   * few per statement. Another replica learns of a session this much later. @default 50
   */
  lingerMs?: number;
  /** Sessions of a dead replica this replica removed, with the dead replica's last heartbeat. */
  onReaped?: (sessions: ReapedSession[]) => void;
  onError?: (error: Error) => void;
  /** A notification on `channel` that no replica sent (malformed): dropped; said to the operator. */
  onMalformed?: (channel: string) => void;
}
