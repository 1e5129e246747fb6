import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import pkg from '../../package.json' with { type: 'json' };
import type { Clock } from '../clock.js';

/** Which process a replica is: where an operator finds it. */
export interface ReplicaProcess {
  host: string;
  pid: number;
  /** The server version it runs (during a rolling upgrade, replicas differ). */
  version: string;
}

/** A server process of the deployment, as recorded where every replica can read it. */
export interface ReplicaRecord {
  id: string;
  /** --public-url, else the URL it listens on; null before it listens. */
  url: string | null;
  /** Null for a replica of a version that did not record them. */
  process: ReplicaProcess | null;
  /** Epoch ms. */
  startedAt: number;
  /** Epoch ms, from the replica's own clock; null for a server alone (it has no heartbeat). */
  heartbeatAt: number | null;
  /** Agent sessions it holds (a replica records a session within ~50 ms of admitting it). */
  sessions: number;
  /**
   * Why it is not taking new sessions, as of its last heartbeat (its /healthz problems but the
   * heartbeat's own); empty when ready; null when its version does not record them.
   */
  problems: string[] | null;
}

/**
 * Who serves the deployment: the replicas table of a shared database, or this process alone. The
 * server says where it listens once it does.
 */
export interface ReplicaDirectory {
  readonly backend: 'embedded' | 'postgres';
  /** This process's id among them. */
  readonly selfId: string;
  /** A heartbeat older than this counts as dead; null when there is no heartbeat (a server alone). */
  readonly deadAfterMs: number | null;
  listening(url: string): Promise<void>;
  list(): Promise<ReplicaRecord[]>;
  /**
   * How many replicas are live, from the last heartbeat's read of the table (no query). A dead one
   * is removed by the heartbeat that finds it, so there is no dead count to keep.
   */
  liveCount(): number;
  /** The time heartbeats are dated by: the database's clock for replicas, the server's alone. */
  now(): number;
}

/** This process, as the server and its CLI's `--version` name it. */
export function thisProcess(): ReplicaProcess {
  return { host: hostname(), pid: process.pid, version: pkg.version };
}

/** The embedded store: one server, no replicas table; its sessions are the registry's. */
export class SingleServerDirectory implements ReplicaDirectory {
  readonly backend = 'embedded';
  readonly selfId = randomUUID();
  readonly deadAfterMs = null;
  private url: string | null = null;
  private readonly startedAt: number;

  constructor(private readonly o: { clock: Clock; sessions: () => number }) {
    this.startedAt = o.clock.now();
  }

  async listening(url: string): Promise<void> {
    this.url = url;
  }

  liveCount(): number {
    return 1;
  }

  now(): number {
    return this.o.clock.now();
  }

  async list(): Promise<ReplicaRecord[]> {
    return [
      {
        id: this.selfId,
        url: this.url,
        process: thisProcess(),
        startedAt: this.startedAt,
        heartbeatAt: null,
        sessions: this.o.sessions(),
        problems: [],
      },
    ];
  }
}

export interface ReplicaView {
  id: string;
  /** The replica that answered. */
  self: boolean;
  url: string | null;
  host: string | null;
  pid: number | null;
  version: string | null;
  startedAt: string;
  heartbeatAt: string | null;
  /** Since its last heartbeat, by the database's clock as the answering replica follows it; null for a server alone. */
  heartbeatAgeMs: number | null;
  /** `dead`: its heartbeat is past the bound; the next live replica's heartbeat removes it. */
  state: 'live' | 'dead';
  /** Taking new sessions, as of its last heartbeat; null when its version does not say. */
  ready: boolean | null;
  problems: string[];
  sessions: number;
}

export interface ReplicasView {
  backend: 'embedded' | 'postgres';
  /**
   * The URL the answering server was told it is reached by (`--public-url`), null when it was not:
   * agents must then use it (their proofs are bound to it), and a console open elsewhere is refused
   * its live feed (the origin check).
   */
  publicUrl: string | null;
  deadAfterMs: number | null;
  sessions: number;
  replicas: ReplicaView[];
}

/** The deployment's server processes, for `replicas.list`. */
export class ReplicaService {
  constructor(private readonly deps: { directory: ReplicaDirectory; publicUrl?: string | null }) {}

  /** For the metrics page: from memory, no database read per scrape. */
  liveCount(): number {
    return this.deps.directory.liveCount();
  }

  async list(): Promise<ReplicasView> {
    const { directory } = this.deps;
    const records = await directory.list();
    const now = directory.now();
    const replicas = records.map((r): ReplicaView => {
      const age = r.heartbeatAt === null ? null : Math.max(0, now - r.heartbeatAt);
      const dead = age !== null && directory.deadAfterMs !== null && age > directory.deadAfterMs;
      return {
        id: r.id,
        self: r.id === directory.selfId,
        url: r.url,
        host: r.process?.host ?? null,
        pid: r.process?.pid ?? null,
        version: r.process?.version ?? null,
        startedAt: new Date(r.startedAt).toISOString(),
        heartbeatAt: r.heartbeatAt === null ? null : new Date(r.heartbeatAt).toISOString(),
        heartbeatAgeMs: age,
        state: dead ? 'dead' : 'live',
        ready: dead ? false : r.problems === null ? null : r.problems.length === 0,
        problems: r.problems ?? [],
        sessions: r.sessions,
      };
    });
    return {
      backend: directory.backend,
      publicUrl: this.deps.publicUrl ?? null,
      deadAfterMs: directory.deadAfterMs,
      sessions: replicas.reduce((sum, r) => sum + r.sessions, 0),
      replicas,
    };
  }
}
