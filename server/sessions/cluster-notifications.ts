import pg from 'pg';
import type { Clock } from '../clock.js';
import { connectionOptions } from '../store/postgres/connect.js';
import type { ClusterPicture } from './cluster-picture.js';
import type { DeletionConfirmationListener } from './cluster-sessions.js';
import {
  CLAIM_OF_SQL,
  CONFIRMATIONS_OF_SQL,
  type ConfirmationRow,
  decodeNotification,
  SESSIONS_CHANNEL,
  senderOf,
} from './postgres-cluster-sql.js';

export interface ClusterNotificationsOptions {
  /** Statements (the checks against the tables) run on the pool; the listener has a connection of its own. */
  pool: pg.Pool;
  connectionString: string;
  clock: Clock;
  replicaId: string;
  /** What this replica knows of the others' sessions; told what it hears and what the tables confirm. */
  picture: ClusterPicture;
  /** Counts the statements it sends (tests read them). */
  statements: { verify: number; confirmationRead: number };
  /** Reads every other replica's session again: after the listener is back, notifications were missed. */
  resync: () => Promise<void>;
  onError?: ((error: Error) => void) | undefined;
  /** A notification on `channel` that no replica sent (malformed): dropped; said to the operator. */
  onMalformed?: ((channel: string) => void) | undefined;
}

const RELISTEN_MS = 1000;

/**
 * What one replica hears of the others on the sessions channel: their claims, releases and
 * deletion confirmations. A notification is a hint, never proof: PostgreSQL puts no privilege on
 * NOTIFY, so any role that may connect to the database can send one, while only the replicas' role
 * may read and write the tables. So a payload is checked whole before any of it is used, a claim
 * that would end a session here is read back from `agent_sessions` first, and a deletion
 * confirmation from `deletion_confirmations`. The listener's connection, lost, is made again (every
 * RELISTEN_MS until it works), and everything is read again then.
 */
export class ClusterNotifications {
  private listener: pg.Client | undefined;
  private relistenTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Connectors whose claim is being checked; true: another claim was heard meanwhile, check again. */
  private readonly verifying = new Map<string, boolean>();
  private presenceHandler: (connectorIds: string[]) => void = () => {};
  private confirmationListener: DeletionConfirmationListener = { awaits: () => false, confirmed: () => {} };

  constructor(private readonly o: ClusterNotificationsOptions) {}

  /** Sets who is told of connectors whose session on another replica started or ended. */
  onPresence(handler: (connectorIds: string[]) => void): void {
    this.presenceHandler = handler;
  }

  /** Sets who is told of deletions confirmed on other replicas, and which it awaits. */
  onDeletionConfirmed(listener: DeletionConfirmationListener): void {
    this.confirmationListener = listener;
  }

  /** Connects and listens; rejects when it cannot (the replica's start fails then). */
  async listen(): Promise<void> {
    const client = new pg.Client(connectionOptions(this.o.connectionString));
    const lost = (error: Error) => {
      if (this.listener !== client || this.stopped) return;
      this.listener = undefined;
      this.o.onError?.(error);
      client.end().catch(() => {});
      this.relisten();
    };
    client.on('error', lost);
    client.on('end', () => lost(new Error('cluster listener connection ended')));
    client.on('notification', (message) => {
      // Whatever a payload holds, a throw here would end the process (an event handler).
      try {
        if (message.payload) this.heard(message.payload);
      } catch (error) {
        this.o.onError?.(error as Error);
      }
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${SESSIONS_CHANNEL}`);
    } catch (error) {
      client.end().catch(() => {});
      throw error;
    }
    this.listener = client;
  }

  /** Stops listening for good; checks in flight end without effect. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.relistenTimer);
    const listener = this.listener;
    this.listener = undefined;
    listener?.end().catch(() => {});
  }

  /**
   * A heard claim would end a session of ours: the table says whether another replica holds it.
   * One check at a time per connector; a claim heard during it may postdate what it read, so it
   * is checked again once the first ends.
   */
  verifyClaim(connectorId: string): void {
    if (this.stopped) return;
    if (this.verifying.has(connectorId)) {
      this.verifying.set(connectorId, true);
      return;
    }
    this.verifying.set(connectorId, false);
    this.o.statements.verify++;
    this.o.pool
      .query<{ replica_id: string; session_id: string; remote_address: string; connected_at: string }>(
        CLAIM_OF_SQL,
        [connectorId],
      )
      .then(({ rows: [row] }) => {
        if (this.stopped) return;
        if (row && row.replica_id !== this.o.replicaId)
          this.o.picture.claimed(
            connectorId,
            row.replica_id,
            Number(row.session_id),
            row.remote_address,
            Number(row.connected_at),
          );
        else this.o.picture.refuted(connectorId);
      })
      .catch((error: Error) => this.o.onError?.(error))
      .finally(() => {
        const again = this.verifying.get(connectorId);
        this.verifying.delete(connectorId);
        if (again) this.verifyClaim(connectorId);
      });
  }

  /**
   * Listens again after RELISTEN_MS (and again after each failure), then reads everything again:
   * notifications sent while it was away are gone.
   */
  private relisten(): void {
    clearTimeout(this.relistenTimer);
    this.relistenTimer = setTimeout(() => {
      if (this.stopped) return;
      this.listen()
        .then(() => this.o.resync())
        .catch((error) => {
          this.o.onError?.(error as Error);
          this.relisten();
        });
    }, RELISTEN_MS);
    this.relistenTimer.unref();
  }

  private heard(payload: string): void {
    // A replica hears its own claims and releases too.
    if (senderOf(payload) === this.o.replicaId) return;
    const notice = decodeNotification(payload);
    if (!notice) {
      this.o.onMalformed?.(SESSIONS_CHANNEL);
      return;
    }
    const { picture } = this.o;
    picture.heard(notice.replicaId, this.o.clock.now());
    if (notice.kind === 'deletionConfirmed') {
      const awaited = notice.confirmations
        .map((c) => c.connectorId)
        .filter((connectorId) => this.confirmationListener.awaits(connectorId));
      if (awaited.length > 0) this.readConfirmations(awaited);
      return;
    }
    if (notice.kind === 'claimed') {
      for (const c of notice.claims)
        picture.heardClaim(c.connectorId, notice.replicaId, c.claim, c.remoteAddress);
    } else {
      for (const r of notice.releases) picture.released(r.connectorId, r.claim);
    }
    const changed = notice.kind === 'claimed' ? notice.claims : notice.releases;
    this.presenceHandler(changed.map((c) => c.connectorId));
  }

  /** Tells the listener of the recorded confirmations of `connectorIds`, which a notification announced. */
  private readConfirmations(connectorIds: string[]): void {
    this.o.statements.confirmationRead++;
    this.o.pool
      .query<ConfirmationRow>(CONFIRMATIONS_OF_SQL, [connectorIds])
      .then(({ rows }) => {
        for (const row of rows)
          this.confirmationListener.confirmed({
            connectorId: row.connector_id,
            confirmedAt: Number(row.confirmed_at),
            confirmedFrom: row.confirmed_from,
          });
      })
      .catch((error: Error) => this.o.onError?.(error));
  }
}
