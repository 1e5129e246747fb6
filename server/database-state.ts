import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import {
  DatabaseStartError,
  type DataFiles,
  loadGivenSecret,
  loadOrCreateSecret,
  type Replication,
} from './data-files.js';
import { DatabaseTrouble, isDatabaseError } from './database-trouble.js';
import {
  markReplicaDataDir,
  REPLICA_MARKER,
  ReplicaDataDirError,
  refuseOtherDatabase,
  replicaDatabaseOf,
} from './replica-marker.js';
import { ISSUER, type ServerConfig } from './server-config.js';
import { auditOutageLogging, TableAuditLog } from './services/audit.js';
import { scheduleAuditRetention } from './services/audit-retention.js';
import { IdentityAuthority } from './services/identity.js';
import { domainEventsOf, revocationConfirmationsOf } from './services/remote-changes.js';
import { thisProcess } from './services/replicas.js';
import { SecretBox } from './services/secrets.js';
import type { SigningKeyFile } from './services/signing-key-records.js';
import { clockSkewWatch, DatabaseClock } from './sessions/database-clock.js';
import { PostgresClusterSessions } from './sessions/postgres-cluster-sessions.js';
import { CONNECT_TIMEOUT_MS, connectionOptions } from './store/postgres/connect.js';
import {
  connectableByEveryRole,
  everyRoleWarning,
  malformedNotificationNotice,
  plaintextWarning,
} from './store/postgres/database-access.js';
import { feedRetentionFor } from './store/postgres/feed-retention.js';
import { databaseLocation } from './store/postgres/location.js';
import { ForeignDatabaseError } from './store/postgres/migrate.js';
import { PgStore } from './store/postgres/pg-store.js';
import { SealedDocument, SecretMismatchError } from './store/postgres/sealed-document.js';
import { SECTIONS } from './store/store.js';

/** The PostgreSQL side of a replica, beside the files every server has. */
export interface DatabaseState extends DataFiles {
  store: PgStore;
  /** Reads and writes of the audit log, the shared documents and the cluster's sessions. */
  pool: pg.Pool;
  replication: Replication;
  close(): Promise<void>;
}

/**
 * How stale the change feed may be before the replica stops taking new sessions: it reads every
 * second (and at once on a notification), so three missed reads mean the database is out of reach.
 */
export const FEED_STALE_MS = 3000;

/**
 * Opens the state a replica shares with the others through `--database-url`: the store (migrating the
 * schema first, under a lock, so replicas starting together do not race), the audit log, and the
 * signing keys sealed with the server secret. The secret itself is never in the database: every
 * replica is given the same one (`--secret-file`, or the same `secret.key` in each data dir), and one
 * given another cannot open the keys (SecretMismatchError).
 */
export async function openDatabaseState(
  config: Pick<
    ServerConfig,
    | 'dataDir'
    | 'publicUrl'
    | 'secretFile'
    | 'auditRetentionMs'
    | 'auditPruneIntervalMs'
    | 'feedMaxAgeMs'
    | 'whenCutOff'
    | 'replicaHeartbeatMs'
    | 'replicaDeadAfterMs'
  > & { databaseUrl: string },
  { clock, logger }: { clock: Clock; logger: Logger },
): Promise<DatabaseState> {
  // Before anything is made: a replica's dir given another database would become a new deployment.
  refuseOtherDatabase(config.dataDir, databaseLocation(config.databaseUrl));
  const markedBefore = replicaDatabaseOf(config.dataDir) !== null;
  // Given (--secret-file): read, never made, so a replica cannot start with a secret of its own.
  const ownSecret = join(config.dataDir, 'secret.key');
  const madeSecret = !config.secretFile && !existsSync(ownSecret);
  const secret = config.secretFile
    ? await loadGivenSecret(config.secretFile)
    : await loadOrCreateSecret(ownSecret);
  const url = config.databaseUrl;
  const oldStore = join(config.dataDir, 'store.json');
  // Database failures are logged as one trouble (its start, a line a minute, its end), not each.
  const trouble = new DatabaseTrouble(logger);
  const report = (what: string) => (error: unknown) =>
    isDatabaseError(error) ? trouble.failed(what, error) : logger.warn({ err: error }, what);
  const store = await PgStore.open(url, {
    logger: {
      warn: (details: { err?: unknown }, message: string) =>
        details.err !== undefined && isDatabaseError(details.err)
          ? trouble.failed(message, details.err)
          : logger.warn(details, message),
    },
    clock,
    feedRetention: feedRetentionFor(config.feedMaxAgeMs),
  }).catch(async (error: unknown) => {
    // Nothing was sealed with a secret this start made: of no use, and a trap for the next start.
    if (madeSecret) await rm(ownSecret, { force: true });
    throw databaseStartError(url, error);
  });
  if (existsSync(oldStore)) {
    // A single server's dir given a database that holds nothing: its import was skipped. Started, the
    // replica would be a new deployment on the old server's address (new signing keys, which refuse
    // every agent it enrolled, an admin.key put aside) and mark the dir a replica's.
    const empty = store.read((view) => SECTIONS.every((section) => view.list(section).length === 0));
    if (!markedBefore && empty) {
      await store.close().catch(() => {});
      if (madeSecret) await rm(ownSecret, { force: true });
      throw new ReplicaDataDirError(
        oldStore,
        `this data dir holds a single server's state, and the PostgreSQL database at ${databaseLocation(url)} holds none: ` +
          `copy it in first, with the server stopped: connector-server import --data-dir ${config.dataDir} (README, "Move a single server to replicas"). ` +
          'Started so, the replica would be a new, empty deployment whose keys refuse every agent of this one. For a new deployment, give the replica a data dir of its own',
      );
    }
    logger.warn(
      { file: oldStore },
      "this data dir holds a single server's store.json, which a replica does not read (the state is in the database); move it away once the import is checked (a start on this dir without a database URL is refused from now on: see replica.json)",
    );
  }
  // The database is this deployment's: from now on a start on this dir without it is refused.
  await markReplicaDataDir(config.dataDir, databaseLocation(url)).catch(async (error: unknown) => {
    await store.close().catch(() => {});
    throw error;
  });
  const pool = new pg.Pool({ ...connectionOptions(url), max: 4 });
  pool.on('error', report('PostgreSQL connection lost'));
  // The heartbeat's own connection: behind a fleet's claims on the pool, a late heartbeat would look
  // like a replica cut off from the database, and end every session (--when-cut-off).
  const heartbeatPool = new pg.Pool({ ...connectionOptions(url), max: 1 });
  heartbeatPool.on('error', report('PostgreSQL connection lost'));
  // What the replicas compare between them is dated by the database's clock (see DatabaseClock).
  const databaseClock = new DatabaseClock(clock);
  const checkSkew = clockSkewWatch(databaseClock, logger);
  const answered = setInterval(() => {
    if (store.feed.listening && Date.now() - store.feed.lastReadAt < FEED_STALE_MS) trouble.answered();
    checkSkew();
  }, 1000);
  answered.unref();
  const close = async () => {
    clearInterval(answered);
    await store.close().catch(() => {});
    await pool.end().catch(() => {});
    await heartbeatPool.end().catch(() => {});
  };
  try {
    const audit = TableAuditLog.create(pool, clock, {
      onWriteError: (error) =>
        isDatabaseError(error)
          ? trouble.failed('audit log write', error)
          : logger.error(
              { err: error },
              'audit log write failed (events not written are held in memory and retried)',
            ),
      ...auditOutageLogging(logger),
    });
    const keys = new SealedDocument<SigningKeyFile>({
      pool,
      connectionString: url,
      name: 'signing-keys',
      box: new SecretBox(secret),
      onError: report('signing keys: check or listener failed'),
    });
    const identity = await IdentityAuthority.open(keys, { issuer: ISSUER, clock });
    /**
     * The change feed's part of readiness; the heartbeat's is the cluster's own. Detailed, with the
     * database's last answer as its log says it (a password changed, a privilege gone), for the
     * replicas table, which admins read; else with its code alone, for what anyone may read
     * (/healthz, a refused upgrade, a tRPC answer's header): the reason can name the database's
     * host, port and user.
     */
    const feedProblems = (detailed: boolean): string[] => {
      const now = Date.now();
      const shown = detailed ? trouble.cause?.replaceAll(url, '<url>') : trouble.code;
      const cause = shown ? ` (${shown})` : '';
      if (!store.feed.listening) return [`the change feed has lost its database connection${cause}`];
      if (now - store.feed.lastReadAt > FEED_STALE_MS)
        return [
          `the change feed last read the database ${Math.round((now - store.feed.lastReadAt) / 1000)} s ago${cause}`,
        ];
      return [];
    };
    const logCutOff = (sessions: number, silentMs: number) =>
      logger.warn(
        { sessions, silentMs: Math.round(silentMs) },
        `this replica has not reached the database for ${Math.round(silentMs / 1000)} s: ${endedSessions(sessions)} because it can no longer hear a revoke made through another replica${sessions === 0 ? ', and takes none until it does' : '; its agents reconnect to a replica that can, or wait'} (--when-cut-off keep-sessions keeps them instead)`,
      );
    const cluster = await PostgresClusterSessions.start({
      pool,
      heartbeatPool,
      connectionString: url,
      clock,
      databaseClock,
      url: config.publicUrl,
      process: thisProcess(),
      // Written with each heartbeat: any replica can then say which of them is not ready, and why.
      problems: () => feedProblems(true),
      whenCutOff: config.whenCutOff,
      ...(config.replicaHeartbeatMs ? { heartbeatMs: config.replicaHeartbeatMs } : {}),
      ...(config.replicaDeadAfterMs ? { deadAfterMs: config.replicaDeadAfterMs } : {}),
      onCutOff: logCutOff,
      onError: report('cluster sessions: a statement or the listener failed'),
      onMalformed: malformedNotificationNotice(
        (details, message) => logger.warn(details, message),
        () => clock.now(),
      ),
    });
    const plaintext = plaintextWarning(url);
    if (plaintext) logger.warn(plaintext);
    const access = await connectableByEveryRole(pool);
    if (access.open) logger.warn(everyRoleWarning(access.database, access.user));
    const retention =
      config.auditRetentionMs === null
        ? null
        : scheduleAuditRetention({
            audit,
            clock,
            retentionMs: config.auditRetentionMs,
            intervalMs: config.auditPruneIntervalMs,
            logger,
          });
    const replication: Replication = {
      cluster,
      directory: cluster,
      follow({ events, agentSessions, terminations, metrics, records }) {
        store.feedUpkeep.onPruned = (rows) => metrics.feedRowsPruned.inc(rows);
        store.onReload = () => metrics.feedReloads.inc();
        cluster.onCutOff = (sessions, silentMs) => {
          metrics.cutOffs.inc();
          metrics.cutOffSessions.inc(sessions);
          logCutOff(sessions, silentMs);
        };
        cluster.onCutOffKept = (silentMs) =>
          logger.warn(
            { silentMs: Math.round(silentMs) },
            `this replica has not reached the database for ${Math.round(silentMs / 1000)} s: it keeps its agent sessions (--when-cut-off keep-sessions), though it can no longer hear a revoke made through another replica; a revoke made elsewhere reaches its agents once the database answers again`,
          );
        store.onForeignChangeLag = (ms) => metrics.feedLagSeconds.observe(Math.max(0, ms) / 1000);
        // Another replica's revoke, delete, disable or group change reaches the sessions held here.
        store.setRemoteChangeListener((changes) => {
          const connectorIdsOf = (groupId: string) =>
            store.read((view) =>
              view
                .list('connectors')
                .filter((c) => c.groupId === groupId)
                .map((c) => c.id),
            );
          for (const event of domainEventsOf(changes, { connectorIdsOf })) events.saved(event);
          for (const { connectorId, termination } of revocationConfirmationsOf(changes))
            terminations.confirmedElsewhere(connectorId, termination);
          records.announceForeign(changes);
        });
        cluster.onReaped = (sessions) => {
          for (const { connectorId, lastSeenAt } of sessions)
            agentSessions.recordSeen(connectorId, lastSeenAt);
        };
      },
      problems() {
        const found = feedProblems(false);
        if (clock.now() - cluster.lastHeartbeatAt > cluster.deadAfterMs / 2)
          found.push('this replica cannot tell the database it is alive (heartbeat failing)');
        // Its wall clock may say otherwise (stepped back): it takes no session until it is back.
        else if (cluster.cutOff.endedSessions)
          found.push('this replica ended its sessions, cut off from the database, and is not back yet');
        return found;
      },
    };
    return {
      secret,
      store,
      audit,
      identity,
      pool,
      replication,
      async close() {
        await retention?.stop();
        await cluster.stop();
        await audit.close().catch(() => {});
        identity.close();
        await close();
      },
    };
  } catch (error) {
    await close();
    // A secret this start made, which the database's is not: of no use, and a trap for the next start.
    if (madeSecret && error instanceof SecretMismatchError) await rm(ownSecret, { force: true });
    // Nor is the dir a replica's of that database if this start, refused, was its first.
    if (!markedBefore) await rm(join(config.dataDir, REPLICA_MARKER), { force: true });
    // The statements after the store's (the cluster's start, the sealed keys): a database that
    // refuses them (a privilege missing on one table, the connection lost) is said as at open.
    throw isDatabaseError(error) ? databaseStartError(url, error) : error;
  }
}

/** What a replica cut off from its database did with its sessions, in words. */
function endedSessions(count: number): string {
  if (count === 0) return 'it had no agent session to end';
  return `it ended its ${count === 1 ? 'agent session' : `${count} agent sessions`} (1012, not final)`;
}

/** The start-up error for a database that cannot be used (see DatabaseStartError.configuration). */
export function databaseStartError(url: string, error: unknown): DatabaseStartError {
  return new DatabaseStartError(databaseProblem(url, error), error instanceof ForeignDatabaseError);
}

/** One line about a database that cannot be used, naming where it is but never the password. */
export function databaseProblem(url: string, error: unknown): string {
  const where = databaseLocation(url);
  if (error instanceof ForeignDatabaseError) return `PostgreSQL at ${where} cannot be used: ${error.message}`;
  // node-pg-migrate wraps PostgreSQL's error in one whose message carries the whole stack: the
  // first line says it, and the SQLSTATE is the cause's.
  const cause = (error as { cause?: unknown }).cause;
  const message = ((error as Error).message ?? String(error)).split('\n')[0]!.trim();
  const code =
    (error as { code?: string }).code ??
    (cause as { code?: string } | undefined)?.code ??
    // node-pg-migrate keeps no cause: its text is PostgreSQL's.
    (/permission denied|must be owner/.test(message) ? '42501' : undefined);
  const timedOut = /timeout/i.test(message);
  const fix =
    code === 'ENOTFOUND' || code === 'EAI_AGAIN'
      ? 'no such host (DNS): check the host name in the database URL (--database-url or CONNECTOR_DATABASE_URL)'
      : code === 'ECONNREFUSED' || code === 'ETIMEDOUT'
        ? 'is PostgreSQL running there? check the database URL (--database-url or CONNECTOR_DATABASE_URL)'
        : timedOut
          ? `it took the connection but did not answer within ${CONNECT_TIMEOUT_MS / 1000} s: is it PostgreSQL listening there, and is it overloaded? check the database URL`
          : code === '28P01' || code === '28000'
            ? 'check the user and password in the database URL'
            : code === '3D000'
              ? 'create the database first, owned by the user in the URL (createdb -O USER NAME), or fix its name in the database URL'
              : /does not support SSL/.test(message)
                ? 'the database server does not accept TLS: enable it there, or take sslmode out of the database URL'
                : code === '42501'
                  ? "the user in the database URL lacks a privilege: it must own the server's tables (it creates and alters them at start), e.g. the database's owner (createdb -O USER NAME); tables made through another user's URL must be given to it (ALTER TABLE … OWNER TO USER, each)"
                  : 'check the database URL and the database server';
  return `PostgreSQL at ${where} cannot be used (${code ? `${code}: ` : ''}${message.replaceAll(url, '<url>')}); ${fix}`;
}
