import type { ReplicaRecord } from '../services/replicas.js';
import type { DeletionConfirmation } from './cluster-sessions.js';

/** The channel claims and releases are announced on (see `decodeNotification` for the payload). */
export const SESSIONS_CHANNEL = 'agent_sessions';

/**
 * Entries per notification: a payload must stay under PostgreSQL's 8000 bytes, and an entry is at most
 * ~110 (a connector id, a number, an IPv6 address), so a batch goes out as several notifications.
 */
const CLAIMS_PER_NOTIFICATION = 60;
const RELEASES_PER_NOTIFICATION = 120;
/** Deletion confirmations per notification (an entry: a connector id, a time, an address). */
export const CONFIRMATIONS_PER_NOTIFICATION = 60;

/**
 * Records deletion confirmations (the first of a connector's is kept) and announces them, one NOTIFY
 * per payload in $5 (built by the replica; see deletionConfirmationPayloads). The notifications go out
 * at commit, after the rows are visible. $1 replica id, $2 connector ids, $3 times, $4 addresses.
 */
export const CONFIRM_DELETIONS_SQL = `
  WITH recorded AS (
    INSERT INTO deletion_confirmations (connector_id, replica_id, confirmed_at, confirmed_from)
    SELECT connector_id, $1, confirmed_at, confirmed_from
      FROM unnest($2::text[], $3::bigint[], $4::text[]) AS u(connector_id, confirmed_at, confirmed_from)
    ON CONFLICT (connector_id) DO NOTHING
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM recorded)::int AS recorded,
         count(pg_notify('${SESSIONS_CHANNEL}', p))::int AS notifications
    FROM unnest($5::text[]) AS p`;

/** The recorded deletion confirmations of the connectors $1: what a heard announcement is checked against. */
export const CONFIRMATIONS_OF_SQL = `
  SELECT connector_id, confirmed_at::text AS confirmed_at, confirmed_from
    FROM deletion_confirmations WHERE connector_id = ANY($1::text[])`;

/** A row of CONFIRMATIONS_OF_SQL. */
export interface ConfirmationRow {
  connector_id: string;
  confirmed_at: string;
  confirmed_from: string | null;
}

/**
 * How long a recorded deletion confirmation is kept: a delete waits for one for under a second
 * (TERMINATION_ACK_TIMEOUT_MS after its commit); minutes leave room for a replica's slow turn.
 */
export const CONFIRMATION_RETENTION_MS = 5 * 60_000;

/** One NOTIFY per slice of the `gone` rows (connector_id, session_id): a release announced. */
const NOTIFY_RELEASES = `
  numbered AS (SELECT connector_id, session_id, row_number() OVER () AS ord FROM gone)
  SELECT count(*)::int AS notifications FROM (
    SELECT pg_notify('${SESSIONS_CHANNEL}',
      'r ' || $1 || E'\\n' || string_agg(connector_id || ' ' || session_id, E'\\n'))
      FROM numbered GROUP BY (ord - 1) / ${RELEASES_PER_NOTIFICATION}) n`;

/**
 * Claims a batch in one statement: a number from the sequence for each, an upsert that keeps the
 * larger number, and the NOTIFYs. $1 replica id, $2 connector ids, $3 addresses, $4 connected-at.
 * Answers each claim's position in the batch (1-based) and its number.
 */
export const CLAIM_SQL = `
  WITH input AS MATERIALIZED (
    SELECT u.ord, u.connector_id, u.remote_address, u.connected_at,
           nextval('agent_session_claims') AS session_id
      FROM unnest($2::text[], $3::text[], $4::bigint[])
           WITH ORDINALITY AS u(connector_id, remote_address, connected_at, ord)
  ),
  upserted AS (
    INSERT INTO agent_sessions (connector_id, replica_id, session_id, remote_address, connected_at)
    SELECT connector_id, $1, session_id, remote_address, connected_at FROM input
    ON CONFLICT (connector_id) DO UPDATE SET
      replica_id = excluded.replica_id, session_id = excluded.session_id,
      remote_address = excluded.remote_address, connected_at = excluded.connected_at
    WHERE agent_sessions.session_id < excluded.session_id
    RETURNING 1
  ),
  notified AS (
    SELECT pg_notify('${SESSIONS_CHANNEL}', 'c ' || $1 || E'\\n' ||
      string_agg(connector_id || ' ' || session_id || ' ' || remote_address, E'\\n' ORDER BY ord))
      FROM input GROUP BY (ord - 1) / ${CLAIMS_PER_NOTIFICATION}
  )
  SELECT input.ord::text AS ord, input.session_id::text AS session_id
    FROM input, (SELECT count(*) FROM notified) AS n`;

/** Releases a batch if each claim is still this replica's. $1 replica id, $2 connector ids, $3 numbers. */
export const RELEASE_SQL = `
  WITH gone AS (
    DELETE FROM agent_sessions s USING unnest($2::text[], $3::bigint[]) AS u(connector_id, session_id)
     WHERE s.connector_id = u.connector_id AND s.session_id = u.session_id AND s.replica_id = $1
    RETURNING s.connector_id, s.session_id
  ),${NOTIFY_RELEASES}`;

/**
 * Releases whatever claims replica $1 holds of connectors $2, whatever their numbers: for sessions
 * that ended here before their claim came back with a number. An earlier try of that claim may have
 * been written with its answer lost; any claim of this replica for them is older than that session
 * (a newer one here would be claimed after it), so none is a session this replica still holds.
 */
export const RELEASE_UNNUMBERED_SQL = `
  WITH gone AS (
    DELETE FROM agent_sessions WHERE replica_id = $1 AND connector_id = ANY($2::text[])
    RETURNING connector_id, session_id
  ),${NOTIFY_RELEASES}`;

/** Releases every claim of replica $1 (it stops, or it lost track of its sessions). */
export const RELEASE_ALL_SQL = `
  WITH gone AS (
    DELETE FROM agent_sessions WHERE replica_id = $1 RETURNING connector_id, session_id
  ),${NOTIFY_RELEASES}`;

/**
 * Removes the replicas whose heartbeat is older than $2 (not $1, the caller) and their sessions, and
 * the deletion confirmations recorded before $3 (no delete waits for them any more).
 * Two replicas reaping at once: the row lock gives each dead replica's sessions to one of them.
 */
export const REAP_SQL = `
  WITH expired AS (
    DELETE FROM deletion_confirmations WHERE confirmed_at < $3
  ),
  dead AS (
    DELETE FROM replicas WHERE heartbeat_at < $2 AND id <> $1 RETURNING id, heartbeat_at
  ),
  gone AS (
    DELETE FROM agent_sessions s USING dead WHERE s.replica_id = dead.id
    RETURNING s.connector_id, s.session_id, dead.heartbeat_at
  )
  SELECT connector_id, session_id::text AS session_id, heartbeat_at::text AS heartbeat_at FROM gone`;

/** A page of the other replicas' sessions in connector order: $1 this replica, $2 after, $3 rows. */
export const RESYNC_PAGE_SQL = `
  SELECT connector_id, replica_id, session_id::text AS session_id, remote_address,
         connected_at::text AS connected_at
    FROM agent_sessions WHERE replica_id <> $1 AND connector_id > $2
   ORDER BY connector_id LIMIT $3`;

/**
 * The other replicas' sessions in one row: how many, and the sum of their claim numbers modulo
 * $2 (2^32). $1 this replica. A replica compares it with its picture before reading them all.
 */
export const SESSIONS_SUMMARY_SQL = `
  SELECT count(*)::int AS count, (coalesce(sum(session_id), 0) % $2)::float8 AS claim_sum
    FROM agent_sessions WHERE replica_id <> $1`;

/** The claim the table holds for connector $1, if any: a heard claim is checked here before it ends a session. */
export const CLAIM_OF_SQL = `
  SELECT replica_id, session_id::text AS session_id, remote_address, connected_at::text AS connected_at
    FROM agent_sessions WHERE connector_id = $1`;

/** Every replica with its process and how many sessions it holds, oldest first (`replicas.list`). */
export const REPLICAS_SQL = `
  SELECT r.id, r.url, r.host, r.pid, r.version, r.problems,
         r.started_at::text AS started_at, r.heartbeat_at::text AS heartbeat_at,
         (SELECT count(*) FROM agent_sessions s WHERE s.replica_id = r.id)::int AS sessions
    FROM replicas r
   ORDER BY r.started_at, r.id`;

/** A row of REPLICAS_SQL. */
export interface ReplicaRow {
  id: string;
  url: string | null;
  host: string | null;
  pid: number | null;
  version: string | null;
  problems: string[] | null;
  started_at: string;
  heartbeat_at: string;
  sessions: number;
}

/** A replica as `replicas.list` gives it; a replica of an older version recorded no process. */
export function replicaRecordOf(row: ReplicaRow): ReplicaRecord {
  return {
    id: row.id,
    url: row.url,
    process:
      row.host === null || row.pid === null || row.version === null
        ? null
        : { host: row.host, pid: row.pid, version: row.version },
    startedAt: Number(row.started_at),
    heartbeatAt: Number(row.heartbeat_at),
    sessions: row.sessions,
    problems: row.problems,
  };
}

/** A session of a dead replica that this replica removed; its agent was last known connected then. */
export interface ReapedSession {
  connectorId: string;
  /** The dead replica's last heartbeat (epoch ms). */
  lastSeenAt: number;
}

export type ClusterNotification =
  | {
      kind: 'claimed';
      replicaId: string;
      claims: Array<{ connectorId: string; claim: number; remoteAddress: string }>;
    }
  | { kind: 'released'; replicaId: string; releases: Array<{ connectorId: string; claim: number }> }
  | { kind: 'deletionConfirmed'; replicaId: string; confirmations: DeletionConfirmation[] };

/** The payloads announcing `confirmations` (see decodeNotification), each small enough for a NOTIFY. */
export function deletionConfirmationPayloads(
  replicaId: string,
  confirmations: readonly DeletionConfirmation[],
): string[] {
  const payloads: string[] = [];
  for (let i = 0; i < confirmations.length; i += CONFIRMATIONS_PER_NOTIFICATION) {
    const lines = confirmations
      .slice(i, i + CONFIRMATIONS_PER_NOTIFICATION)
      .map((c) => `${c.connectorId} ${c.confirmedAt} ${c.confirmedFrom ?? '-'}`);
    payloads.push([`d ${replicaId}`, ...lines].join('\n'));
  }
  return payloads;
}

/**
 * The replica a payload comes from, read from its first line alone: a replica hears its own claims
 * and releases too, and skips them without splitting the rest.
 */
export function senderOf(payload: string): string | null {
  const end = payload.indexOf('\n');
  const header = end < 0 ? payload : payload.slice(0, end);
  return header.length > 2 && header[1] === ' ' ? header.slice(2) : null;
}

/**
 * Reads a payload: a line `c <replica>` (claimed) or `r <replica>` (released), then one line a
 * session, `<connector> <number>` and, for a claim, ` <address>`; or a line `d <replica>` (deletions
 * confirmed), then `<connector> <epoch ms> <address or ->` a line. Null for anything else, and for a
 * payload with any entry out of shape: PostgreSQL lets any role that may connect to the database
 * notify on the channel, so a payload is checked whole before any of it is believed.
 */
export function decodeNotification(payload: string): ClusterNotification | null {
  const lines = payload.split('\n');
  const header = (lines[0] ?? '').split(' ');
  const [kind, replicaId] = header;
  if (header.length !== 2 || !replicaId || !ID.test(replicaId)) return null;
  if (kind !== 'c' && kind !== 'r' && kind !== 'd') return null;
  const entries = lines.slice(1).map((line) => line.split(' '));
  if (entries.length === 0) return null;
  if (kind === 'd') {
    const confirmations: DeletionConfirmation[] = [];
    for (const entry of entries) {
      const [connectorId = '', at = '', from = ''] = entry;
      if (entry.length !== 3 || !ID.test(connectorId) || !EPOCH_MS.test(at)) return null;
      if (from !== '-' && !ADDRESS.test(from)) return null;
      confirmations.push({ connectorId, confirmedAt: Number(at), confirmedFrom: from === '-' ? null : from });
    }
    return { kind: 'deletionConfirmed', replicaId, confirmations };
  }
  if (kind === 'c') {
    const claims: Array<{ connectorId: string; claim: number; remoteAddress: string }> = [];
    for (const entry of entries) {
      const [connectorId = '', claim = '', remoteAddress = ''] = entry;
      if (entry.length !== 3 || !ID.test(connectorId) || !CLAIM.test(claim) || !ADDRESS.test(remoteAddress))
        return null;
      claims.push({ connectorId, claim: Number(claim), remoteAddress });
    }
    return { kind: 'claimed', replicaId, claims };
  }
  const releases: Array<{ connectorId: string; claim: number }> = [];
  for (const entry of entries) {
    const [connectorId = '', claim = ''] = entry;
    if (entry.length !== 2 || !ID.test(connectorId) || !CLAIM.test(claim)) return null;
    releases.push({ connectorId, claim: Number(claim) });
  }
  return { kind: 'released', replicaId, releases };
}

/** A connector or replica id (ours are `con_…` and UUIDs): letters, digits, `_` and `-`. */
const ID = /^[A-Za-z0-9_-]{1,64}$/;
/** A claim number from the sequence: a positive integer a double holds exactly. */
const CLAIM = /^[1-9][0-9]{0,14}$/;
/** Epoch milliseconds, as Date takes them. */
const EPOCH_MS = /^[0-9]{1,15}$/;
/** An IPv4 or IPv6 address as Node gives a peer's (with a zone, `%eth0`): no spaces, no control characters. */
const ADDRESS = /^[0-9A-Za-z:.%_-]{1,64}$/;
