/** What the harness and its child processes say to each other (over the fork IPC channel). */

/** The three kinds of server under test: the project, and its two floors. */
export type FleetKind = 'project' | 'bare' | 'trpc';
/** Connectors belong to group A (mass-revoked later) or group B (everything else). */
export type Group = 'A' | 'B' | 'C';
export const GROUPS: readonly Group[] = ['A', 'B', 'C'];

/**
 * The project's keepAlive settings, which the minimal-tRPC floor uses too so that both pay for the
 * same pings. Keep in step with server/app.ts (applyWSSHandler) and agent/session.ts (createWSClient).
 */
export const PROJECT_KEEPALIVE = {
  server: { enabled: true, pingMs: 60_000, pongWaitMs: 15_000 },
  client: { enabled: true, intervalMs: 45_000, pongTimeoutMs: 15_000 },
} as const;

export const KIND_LABEL: Record<FleetKind, string> = {
  project: 'project',
  bare: 'bare ws',
  trpc: 'minimal tRPC',
};

export interface ServerReady {
  url: string;
  port: number;
  pid: number;
  /** The project's bootstrap admin key file (project mode only). */
  adminKeyFile: string | null;
  startupMs: number;
}

export interface ServerStats {
  pid: number;
  uptimeMs: number;
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  /** VmHWM: the kernel's peak resident set of the process. */
  peakRssBytes: number;
  /** User + system CPU time since the process started. */
  cpuMs: number;
  cpuSystemMs: number;
  /** Event-loop delay since the last reset (perf_hooks.monitorEventLoopDelay, 10 ms resolution). */
  eld: { maxMs: number; p99Ms: number; meanMs: number };
  openFds: number;
  sessions: number;
  /** The project's store counters (group commit shows as writes ≪ transactions). */
  store: { transactions: number; writes: number; failedWrites: number } | null;
}

export interface EnrollArgs {
  keys: Partial<Record<Group, string>>;
  counts: Partial<Record<Group, number>>;
  /** The server to enroll through. @default the process's --url */
  url?: string;
  concurrency: number;
  localAddress: string;
  timeoutMs: number;
}

export interface EnrollResult {
  enrolled: number;
  failed: number;
  durationMs: number;
  latenciesMs: number[];
  warnings: number;
  firstError: string | null;
}

export interface ConnectArgs {
  /** Live (connected or connecting) sims wanted per group in this process (a group left out: 0). */
  targets: Partial<Record<Group, number>>;
  localAddress: string;
  /** Handshakes in flight at once from this process. */
  concurrency: number;
  timeoutMs: number;
}

export interface ConnectResult {
  started: number;
  ready: number;
  notReady: number;
  durationMs: number;
}

export interface ClientStatus {
  pid: number;
  live: Record<Group, number>;
  ready: number;
  notReady: number;
  pool: Record<Group, number>;
  /** Sims that ended on their own (an agent's runSession resolved) since the last mark. */
  endedSinceMark: number;
  exitCodesSinceMark: Record<string, number>;
  warningsSinceMark: number;
  errorsSinceMark: number;
  socketsOpenedSinceMark: number;
  lastMessages: string[];
  rssBytes: number;
}

export interface CloseSeen {
  id: string;
  closeAtMs: number;
  code: number;
}

export interface GroupClosed {
  count: number;
  closed: number;
  firstCloseAtMs: number;
  lastCloseAtMs: number;
}

export interface AllReady {
  live: number;
  ready: number;
  lastReadyAtMs: number;
}

/** Renewed identities a client process's sims saved since its last mark (times are monoMs; 0 when none). */
export interface RenewalsSeen {
  /** Connectors that saved at least one. */
  count: number;
  firstAtMs: number;
  lastAtMs: number;
}
