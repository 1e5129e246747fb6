import type { Summary } from './lib/stats.js';
import type { FleetKind } from './protocol.js';

/** One measuring step of a fleet: N sessions live. */
export interface StepResult {
  n: number;
  newSessions: number;
  connectMs: number;
  /** Server CPU per new session while they connected (the project's includes each agent's first report). */
  handshakeCpuUs: number;
  /** The part of it spent in the kernel. */
  handshakeSystemCpuUs: number;
  /** Server CPU with N sessions idle, in % of one core. */
  idleCpuPct: number;
  rssBytes: number;
  heapBytes: number;
  rssPerSessionBytes: number;
  heapPerSessionBytes: number;
  openFds: number;
  connectEldMaxMs: number;
  revoke: RevokeResult | null;
}

export interface RevokeResult {
  /** From the call to the agent seeing its socket close. */
  latencyMs: Summary;
  /** How long the revoking call itself took to answer. */
  callMs: Summary;
  missed: number;
  eldMaxMs: number;
  /**
   * Replicas only: of the other replicas' changes applied during the round (the revokes among them),
   * how many were applied within each bound of `connector_store_feed_lag_seconds` (ms → count,
   * summed over the servers; absent in older runs).
   */
  feedLag?: Record<string, number>;
}

export interface MassResult {
  count: number;
  closed: number;
  /** From the call until the last socket of the group closed. */
  allClosedMs: number;
  firstClosedMs: number;
  callMs: number;
  eldMaxMs: number;
  /** The whole machine's CPU busy share from the call until the last close (replicas phase; absent in older runs). */
  machineBusyPct?: number;
  /**
   * CPU time from the call until the last close (replicas phase; absent in older runs): each server's,
   * the client processes' together, and PostgreSQL's (null without one).
   */
  cpuMs?: { servers: number[]; clients: number; postgres: number | null };
}

export interface StormResult {
  n: number;
  /** From the SIGKILL until the last session was back. */
  allBackMs: number;
  /** From the restarted server listening until the last session was back. */
  backAfterListenMs: number;
  serverRestartMs: number;
  back: number;
  notBack: number;
  gaveUp: number;
  exitCodes: Record<string, number>;
  warnings: number;
  errors: number;
  socketsOpened: number;
  peakRssBytes: number;
  cpuMs: number;
  cpuPctOfCore: number;
  eldMaxMs: number;
  admin: {
    calls: number;
    p50Ms: number;
    p99Ms: number;
    maxMs: number;
    errors: number;
    over1s: number;
  } | null;
  lastMessages: string[];
}

export interface FleetResult {
  kind: FleetKind;
  baseRssBytes: number;
  baseHeapBytes: number;
  steps: StepResult[];
  mass: MassResult | null;
  storm: StormResult | null;
}

export interface EnrollmentResult {
  storedBefore: number;
  count: number;
  concurrency: number;
  perSecond: number;
  latencyMs: Summary;
  serverCpuUsPerEnrollment: number;
  /** The part of it spent in the kernel (writes, fsync, sockets). */
  serverSystemCpuUsPerEnrollment: number;
  storeTransactions: number;
  storeWrites: number;
  eldMaxMs: number;
  failed: number;
  firstError: string | null;
  /** jose EdDSA SignJWT in the harness process: one at a time, and 64 in flight. */
  signPerSecond: number;
  signPerSecondConcurrent: number;
  /** All enrollments of the run (setup included). */
  totalEnrolled: number;
  setupPerSecond: number;
  /** Every enrolled connector's first session (connected once and closed), server CPU per session. */
  firstConnect: {
    count: number;
    cpuUs: number;
    systemCpuUs: number;
    durationMs: number;
    eldMaxMs: number;
  } | null;
}

export interface ReadsResult {
  stored: number;
  synthetic: boolean;
  listMs: Summary;
  countsMs: Summary;
  baselineMs: Summary;
  pageBytes: number;
  eldMaxMs: number;
}

export interface ProcessFootprint {
  rssBytes: number;
  maxRssBytes: number;
  cpuPct: number;
}

export interface FootprintResult {
  source: string;
  idleMs: number;
  agent: ProcessFootprint;
  baseline: ProcessFootprint;
}

/** N identities issued together with a short lifetime, renewed by the server while their agents stay connected. */
export interface RenewalResult {
  n: number;
  identityTtlMs: number;
  /** First to last identity issued (the enrollments), and the connects after them. */
  enrollMs: number;
  connectMs: number;
  /** Renewed identities the agents saved, and those saved before every agent was connected. */
  renewed: number;
  renewedBeforeConnected: number;
  /** From all connected to the first renewal seen, and from the first to the last. */
  firstAfterConnectedMs: number;
  windowMs: number;
  /** The server's largest event-loop delay from the first renewal to the last (in ~100 ms slices). */
  eldMaxMs: number;
  /** Slices of that window with a delay over 100 ms: one outlier, or renewals stalling again and again. */
  slicesOver100Ms: number;
  /** The same from all connected until the first renewal (idle, or the connects' after-work). */
  eldMaxBeforeMs: number;
  /** Server CPU (user + system) over the renewal window. */
  cpuMs: number;
}

/** `audit.list` on a server whose audit log holds `events` (scripts/bench/scenarios/audit-list.ts). */
export interface AuditListResult {
  events: number;
  /** The audit files they were written in (the current one and its rotated pieces), and their size. */
  files: number;
  bytes: number;
  /** `audit.list({limit: 100})`, one call at a time. */
  firstPageMs: Summary;
  /** `audit.list({since})` with `since` the time of the 100th newest event. */
  sinceMs: Summary;
  sinceCount: number;
  eldMaxMs: number;
}

/** One step of the replicas phase: `perServer` live sessions on each server (scripts/bench/scenarios/replicas.ts). */
export interface ReplicaStep {
  perServer: number;
  /** Live sessions on each server, as the servers counted them. */
  sessions: number[];
  connectMs: number;
  /** The servers' CPU (all of them) while the step's sessions connected, per new session. */
  handshakeCpuUs: number;
  /**
   * Each server's CPU time (ms) in each turn of the connect, `[turn][server]` (absent in older runs),
   * and what each spent per second idle, holding the sessions it had, just before the step.
   */
  turnCpuMs?: number[][];
  idleCpuMsPerS?: number[];
  /** Each server's idle CPU per second after the step, holding all its sessions (absent in older runs). */
  heldCpuMsPerS?: number[];
  /** Wall time of each turn. */
  turnMs?: number[];
  /**
   * `handshakeCpuUs` less what each server would have spent holding its sessions over each turn
   * (its idle rate, linear in the sessions held, between the readings before and after): the
   * handshakes' own CPU (lib/holding-cost.ts). Null when not measured.
   */
  marginalHandshakeCpuUs?: number | null;
  /** (RSS after GC − RSS after the warm-up), summed over the servers, per live session. */
  rssPerSessionBytes: number;
  heapPerSessionBytes: number;
  maxOpenFds: number;
  /** Revokes through a server other than the agent's (the same one for the embedded backend). */
  revoke: RevokeResult | null;
}

/** Enrollments timed through one or two replicas, with where the machine's CPU went meanwhile. */
export interface ReplicaEnrollRate {
  replicas: number;
  storedBefore: number;
  count: number;
  perSecond: number;
  latencyMs: Summary;
  /** Replica CPU (all replicas enrolled through) per enrollment. */
  serverCpuUsPerEnrollment: number;
  /** PostgreSQL's CPU (the postmaster and its backends) per enrollment. */
  postgresCpuUsPerEnrollment: number;
  /** The whole machine's busy share over the measurement (2 cores = 100 %). */
  machineBusyPct: number;
}

/** One replica SIGKILLed: how long until the agents it held were back on the others. */
export interface ReplicaKillResult {
  sessionsBefore: number[];
  watched: number;
  back: number;
  ended: number;
  allBackMs: number;
  /** Where they went: replica number (1-based) → agents. */
  byReplica: Record<string, number>;
  sessionsAfter: number[];
}

export interface ReplicasResult {
  replicas: number;
  /** The baseline: one server on the embedded store, the same per-server steps. */
  embedded: ReplicaStep[];
  postgres: ReplicaStep[];
  /** A group whose agents are all on one replica, deleted (the baseline of the spread one). */
  massSingle: MassResult | null;
  /** A group spread over every replica, deleted through one of them. */
  massSpread: MassResult | null;
  enrollOne: ReplicaEnrollRate | null;
  enrollTwo: ReplicaEnrollRate | null;
  /** PgStore's own commit rate on the same PostgreSQL (enrollment-shaped transactions). */
  commitFloor: { writers: number; transactions: number; perSecond: number; commits: number } | null;
  kill: ReplicaKillResult | null;
  /**
   * Every connector's first session, before the steps (so that they measure reconnects): the
   * servers' CPU per first session, on the embedded store and on the replicas. Absent in runs
   * before 2026-12-05, whose steps measured first sessions.
   */
  firstSessions?: {
    embedded: FirstSessionsResult | null;
    postgres: FirstSessionsResult | null;
  };
}

export interface FirstSessionsResult {
  count: number;
  /** All the servers' CPU per first session (connect and close), µs. */
  cpuUs: number;
  durationMs: number;
}

export interface RunMeta {
  date: string;
  quick: boolean;
  node: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  openFilesLimit: string;
  loadAverageAtStart: number[];
  command: string;
  commit: string;
  logLevel: string;
  durationMs: number;
}

export interface RunResults {
  meta: RunMeta;
  enrollment: EnrollmentResult | null;
  reads: ReadsResult[];
  fleets: Partial<Record<FleetKind, FleetResult>>;
  footprint: FootprintResult | null;
  /** Absent in runs from before the renewal scenario. */
  renewal?: RenewalResult | null;
  /** Absent in runs from before the audit-list scenario. */
  auditList?: AuditListResult[];
  /** Absent in runs from before the replicas phase. */
  replicas?: ReplicasResult | null;
  errors: Array<{ scenario: string; message: string }>;
}
