import type { Clock } from '../clock.js';

/**
 * A reading whose round trip took longer than this says little about when the database read its
 * clock (anywhere in the trip): kept only while there is no better one.
 */
const MAX_READING_ROUND_TRIP_MS = 1000;

/**
 * The database server's clock, as a replica follows it: its last reading (taken with each
 * heartbeat), moved on by this process's monotonic clock since. What the replicas compare between
 * them (heartbeats, who is dead, when a session connected) is dated by it, so a replica host whose
 * wall clock is off (its time sync failed, a VM resumed) neither takes the others for dead and
 * ends their agents' sessions, nor is taken for dead itself. Before its first reading it is the
 * host's wall clock.
 */
export class DatabaseClock implements Clock {
  private readAt: number | null = null;
  private monotonicAt = 0;

  constructor(
    /** The host's wall clock: the time until the first reading, and what the skew is measured from. */
    private readonly wall: Clock,
    private readonly monotonic: () => number = () => performance.now(),
  ) {}

  now(): number {
    if (this.readAt === null) return this.wall.now();
    // Whole milliseconds, as every clock here answers (the tables keep them as bigint).
    return Math.round(this.readAt + (this.monotonic() - this.monotonicAt));
  }

  /** When a reading is asked for (pass it to `read` with the answer). */
  asking(): number {
    return this.monotonic();
  }

  /** The database's clock read `databaseNowMs` between `askedAt` (from `asking`) and now. */
  read(databaseNowMs: number, askedAt: number): void {
    const answeredAt = this.monotonic();
    if (!Number.isFinite(databaseNowMs)) return;
    if (this.readAt !== null && answeredAt - askedAt > MAX_READING_ROUND_TRIP_MS) return;
    // Read anywhere within the round trip: its middle is off by half of it at most.
    this.readAt = databaseNowMs;
    this.monotonicAt = (askedAt + answeredAt) / 2;
  }

  /** How far the host's wall clock is ahead of the database's (behind: negative); 0 before a reading. */
  wallSkewMs(): number {
    return this.readAt === null ? 0 : this.wall.now() - this.now();
  }
}

/** The database server's clock in epoch milliseconds, as a SELECT list item. */
export const DATABASE_NOW_SQL = '(extract(epoch FROM clock_timestamp()) * 1000)::float8';

/** A host clock this far from the database's is worth a warning: identities and keys expire by it. */
const SKEW_WARNING_MS = 2000;

/**
 * Watches how far the host's wall clock is from the database's: says so once when it passes
 * SKEW_WARNING_MS, and once when it is back within half of that. The replicas do not depend on it
 * (they follow the database's clock), but what each dates by its own clock does: the expiry of
 * identities and provisioning keys, audit times, a session's last-seen time.
 */
export function clockSkewWatch(
  clock: DatabaseClock,
  say: { warn(details: object, message: string): void; info(details: object, message: string): void },
): () => void {
  let warned = false;
  return () => {
    const skewMs = clock.wallSkewMs();
    const seconds = Math.round(skewMs / 100) / 10;
    if (!warned && Math.abs(skewMs) > SKEW_WARNING_MS) {
      warned = true;
      say.warn(
        { skewSeconds: seconds },
        `this host's clock is ${Math.abs(seconds)} s ${skewMs > 0 ? 'ahead of' : 'behind'} the database server's: the replicas judge each other by the database's clock, but identities, provisioning keys and audit times are dated by this one; fix its time sync (NTP, chrony, timedatectl)`,
      );
    } else if (warned && Math.abs(skewMs) < SKEW_WARNING_MS / 2) {
      warned = false;
      say.info({ skewSeconds: seconds }, "this host's clock agrees with the database server's again");
    }
  };
}
