import type pg from 'pg';
import type { ClusterPicture, OwnSession } from './cluster-picture.js';
import type { DeletionConfirmation } from './cluster-sessions.js';
import {
  CLAIM_SQL,
  CONFIRM_DELETIONS_SQL,
  deletionConfirmationPayloads,
  RELEASE_ALL_SQL,
  RELEASE_SQL,
  RELEASE_UNNUMBERED_SQL,
} from './postgres-cluster-sql.js';

export interface SessionOutboxOptions {
  pool: pg.Pool;
  replicaId: string;
  /** Told each claim's number as it comes back (and so whether the session lost to a newer one). */
  picture: ClusterPicture;
  /** Claims (and releases, and confirmations) in one statement, at most. */
  batchSize: number;
  /** How long the first of a batch waits for others before the batch goes out (0: the next turn). */
  lingerMs: number;
  /** How long a failed statement's batch waits before it is sent again. */
  retryMs: number;
  /** Counts the statements it sends, by kind (tests read them). */
  statements: { claim: number; release: number; confirmation: number };
  onError?: ((error: Error) => void) | undefined;
}

/**
 * What one replica tells the others of its own sessions, waiting to go out: claims, then releases,
 * then deletion confirmations, each kind in batches of up to `batchSize` a statement. The first
 * of them waits `lingerMs` for more (a statement costs far more than a row: a round trip, its system
 * calls, a notification read by every other replica). A failed statement puts its batch back in
 * front and everything waits `retryMs`: nothing is lost while the database is away.
 */
export class SessionOutbox {
  private claims: OwnSession[] = [];
  private releases: OwnSession[] = [];
  private confirmations: DeletionConfirmation[] = [];
  /** The send in progress (its linger included); null when none is. */
  private sending: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | undefined;
  private halted = false;
  /**
   * Counts `dropSessions`: a statement that fails after it must not put its sessions back (they
   * were dropped with the others, and the rows it was to write released).
   */
  private generation = 0;
  /** Callers of `releaseAll` waiting for its statement (one serves them all). */
  private releasingAll: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];

  constructor(private readonly o: SessionOutboxOptions) {}

  claim(session: OwnSession): void {
    this.claims.push(session);
    this.schedule();
  }

  /** An own session that ended, once its claim has its number (see ClusterPicture.numbered). */
  release(session: OwnSession): void {
    this.releases.push(session);
    this.schedule();
  }

  /**
   * Recorded in the database and announced, after the claims and releases (so a waiter sees the
   * session gone too); the other replicas believe the record, not the announcement.
   */
  deletionConfirmed(confirmation: DeletionConfirmation): void {
    this.confirmations.push(confirmation);
    this.schedule();
  }

  /** Drops the claims and releases not sent yet: this replica's rows were all released at once. */
  dropSessions(): void {
    this.generation++;
    this.claims = [];
    this.releases = [];
  }

  /**
   * Releases every row of this replica, in turn with its other statements: after the one in flight,
   * whose claims would otherwise land after a release sent beside it and stay in the table as
   * sessions no one holds, and before any queued later. Call it just after `dropSessions`. A failed
   * statement is tried again with the rest (retryMs); it rejects only when the outbox halts.
   */
  releaseAll(): Promise<void> {
    if (this.halted) return this.o.pool.query(RELEASE_ALL_SQL, [this.o.replicaId]).then(() => {});
    return new Promise((resolve, reject) => {
      this.releasingAll.push({ resolve, reject });
      this.schedule();
    });
  }

  /** Sends what is waiting now; resolves when nothing is (tests, shutdown). Bounded by the queue. */
  async flush(): Promise<void> {
    for (let round = 0; round < 100; round++) {
      if (this.claims.length + this.releases.length + this.confirmations.length > 0) this.schedule();
      // Nothing in flight: all sent, or a failed statement waits for its retry.
      if (!this.sending) return;
      await this.sending;
    }
  }

  /** Sends nothing more; resolves once the send in progress (if any) has ended. */
  async halt(): Promise<void> {
    this.halted = true;
    clearTimeout(this.retryTimer);
    await this.sending?.catch(() => {});
    for (const caller of this.releasingAll.splice(0)) caller.reject(new Error('the replica stopped'));
  }

  private schedule(): void {
    if (this.sending || this.halted || this.retryTimer) return;
    const linger = this.o.lingerMs;
    this.sending = new Promise<void>((resolve) =>
      linger > 0 ? setTimeout(resolve, linger) : setImmediate(resolve),
    )
      .then(() => this.sendAll())
      .catch((error) => {
        this.o.onError?.(error as Error);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.schedule();
        }, this.o.retryMs);
        this.retryTimer.unref();
      })
      .finally(() => {
        this.sending = null;
      });
  }

  private async sendAll(): Promise<void> {
    const size = this.o.batchSize;
    for (let rounds = 0; rounds < 1000 && !this.halted; rounds++) {
      if (this.releasingAll.length > 0) await this.sendReleaseAll();
      else if (this.claims.length > 0) await this.sendClaims(this.claims.splice(0, size));
      else if (this.releases.length > 0) await this.sendReleases(this.releases.splice(0, size));
      else if (this.confirmations.length > 0)
        await this.sendConfirmations(this.confirmations.splice(0, size));
      else return;
    }
  }

  private async sendClaims(batch: OwnSession[]): Promise<void> {
    // The newest session of a connector in the batch is the one claimed: an older one was replaced
    // here already (and an upsert may not touch a row twice in one statement).
    const newest = new Map<string, OwnSession>();
    for (const own of batch) newest.set(own.connectorId, own);
    // A session that ended before its claim went out (the database away, a long queue) is not
    // claimed: its claim would draw a number larger than that of the session its agent opened on
    // another replica meanwhile, and replace it there (4009, which stops the agent for good).
    const sessions = [...newest.values()];
    const ended = sessions.filter((own) => own.released);
    const claims = sessions.filter((own) => !own.released);
    const generation = this.generation;
    if (ended.length > 0) {
      try {
        await this.releaseUnnumbered(ended);
      } catch (error) {
        if (generation === this.generation) this.claims.unshift(...sessions);
        throw error;
      }
    }
    if (claims.length === 0) return;
    this.o.statements.claim++;
    let result: pg.QueryResult<{ ord: string; session_id: string }>;
    try {
      result = await this.o.pool.query(CLAIM_SQL, [
        this.o.replicaId,
        claims.map((c) => c.connectorId),
        claims.map((c) => c.remoteAddress),
        claims.map((c) => c.connectedAt),
      ]);
    } catch (error) {
      if (generation === this.generation) this.claims.unshift(...claims);
      throw error;
    }
    for (const row of result.rows) {
      const own = claims[Number(row.ord) - 1]!;
      this.o.picture.numbered(own, Number(row.session_id));
      // It ended while its claim was on the way: released now that it has its number.
      if (own.released) this.releases.push(own);
    }
  }

  /**
   * Clears what an earlier, failed try of these sessions' claims may have written after all (its
   * answer lost): they ended before a claim came back, so nothing of theirs is to be claimed.
   */
  private async releaseUnnumbered(ended: OwnSession[]): Promise<void> {
    this.o.statements.release++;
    await this.o.pool.query(RELEASE_UNNUMBERED_SQL, [this.o.replicaId, ended.map((own) => own.connectorId)]);
  }

  private async sendReleaseAll(): Promise<void> {
    const waiting = this.releasingAll.splice(0);
    this.o.statements.release++;
    try {
      await this.o.pool.query(RELEASE_ALL_SQL, [this.o.replicaId]);
    } catch (error) {
      // Kept in front, and tried again before any claim queued since: a replica that registered again
      // (lostTrack) does not ask twice, and its rows would stay as sessions no one holds.
      this.releasingAll.unshift(...waiting);
      throw error;
    }
    for (const caller of waiting) caller.resolve();
  }

  private async sendReleases(batch: OwnSession[]): Promise<void> {
    this.o.statements.release++;
    const generation = this.generation;
    try {
      await this.o.pool.query(RELEASE_SQL, [
        this.o.replicaId,
        batch.map((own) => own.connectorId),
        batch.map((own) => own.claim),
      ]);
    } catch (error) {
      if (generation === this.generation) this.releases.unshift(...batch);
      throw error;
    }
  }

  private async sendConfirmations(batch: DeletionConfirmation[]): Promise<void> {
    this.o.statements.confirmation++;
    try {
      await this.o.pool.query(CONFIRM_DELETIONS_SQL, [
        this.o.replicaId,
        batch.map((c) => c.connectorId),
        batch.map((c) => c.confirmedAt),
        batch.map((c) => c.confirmedFrom),
        deletionConfirmationPayloads(this.o.replicaId, batch),
      ]);
    } catch (error) {
      this.confirmations.unshift(...batch);
      throw error;
    }
  }
}
