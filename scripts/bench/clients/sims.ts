import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import WebSocket from 'ws';
import { fullJitterDelayMs } from '../../../agent/backoff.js';
import type { IdentityStore, SavedIdentity } from '../../../agent/identity-store.js';
import type { AgentLogger } from '../../../agent/log.js';
import { runSession } from '../../../agent/session.js';
import { createTransport, type Transport } from '../../../agent/transport.js';
import type { HostFacts } from '../../../shared/schemas.js';
import { monoMs } from '../lib/stats.js';
import { type Group, PROJECT_KEEPALIVE } from '../protocol.js';
import type { MinRouter } from '../servers/trpc-min.js';

/** The agent's own transport settings; the sims only swap in source-address-bound sockets and fetch. */
export const agentTransport: Transport = createTransport(null);

/** What a client process learns from its sims. */
export interface SimHooks {
  changed(sim: Sim): void;
  socketOpened(): void;
  /** A project sim saved a renewed identity (pushed by the server, or asked for). */
  renewed(sim: Sim): void;
  warn(message: string): void;
  error(message: string): void;
}

/**
 * One simulated connector's session. `ready` is the moment its session is usable (the project's
 * `ready` event, a bare socket's open, tRPC's `started`); close times are those of its sockets.
 */
export abstract class Sim {
  ready = false;
  readyAt = 0;
  started = false;
  ended = false;
  exitCode: number | null = null;
  /** The server its current (or last) session is on; '' before its first (the project's sims only). */
  server = '';
  /** Close times (monoMs) and codes of its sockets, the most recent last (a few kept). */
  readonly closes: Array<{ at: number; code: number }> = [];

  constructor(
    readonly id: string,
    readonly group: Group,
    protected readonly hooks: SimHooks,
  ) {}

  abstract start(localAddress: string): void;
  abstract stop(): Promise<void>;
  /** A new, unstarted sim for the same connector. */
  abstract fresh(): Sim;

  firstCloseSince(since: number): { at: number; code: number } | undefined {
    return this.closes.find((c) => c.at >= since);
  }

  protected markReady(): void {
    this.ready = true;
    this.readyAt = monoMs();
    this.hooks.changed(this);
  }

  protected markClosed(code: number): void {
    this.closes.push({ at: monoMs(), code });
    if (this.closes.length > 4) this.closes.shift();
    this.ready = false;
    this.hooks.changed(this);
  }

  protected markEnded(exitCode: number): void {
    if (this.ended) return;
    this.ended = true;
    this.ready = false;
    this.exitCode = exitCode;
    this.hooks.changed(this);
  }

  /**
   * A `ws` WebSocket class that leaves from `localAddress` and reports its close to this sim; it
   * keeps the agent transport's opening-handshake time bound.
   */
  protected socketClass(localAddress: string): typeof WebSocket {
    const sim = this;
    const { requestTimeoutMs } = agentTransport;
    class SimSocket extends WebSocket {
      constructor(address: string | URL, protocols?: string | string[]) {
        super(address, protocols, { localAddress, handshakeTimeout: requestTimeoutMs });
        sim.hooks.socketOpened();
        this.once('close', (code: number) => sim.markClosed(code));
      }
    }
    return SimSocket as unknown as typeof WebSocket;
  }
}

/** No-op identity store: the agent's status and identity files are not what is measured. */
function memoryStore(onState: (state: string, server: string) => void, onSave: () => void): IdentityStore {
  return {
    dir: '(memory)',
    identityFile: '(memory)',
    writeStatus: async (status: { state: string; server: string }) => onState(status.state, status.server),
    save: async () => onSave(),
    wipe: async () => {},
  } as unknown as IdentityStore;
}

/** A project agent: the agent's own `runSession` (proof, reconnect with jitter, final closes). */
export class ProjectSim extends Sim {
  private controller: AbortController | null = null;

  constructor(
    private readonly identity: SavedIdentity,
    group: Group,
    hooks: SimHooks,
    /** The facts it enrolled with: an agent on an unchanged host reports none after `ready`. */
    private readonly hostFacts: HostFacts,
  ) {
    super(identity.connectorId, group, hooks);
  }

  start(localAddress: string): void {
    this.started = true;
    this.controller = new AbortController();
    const hooks = this.hooks;
    const logger: AgentLogger = {
      info: () => {},
      warn: (message, fields) => hooks.warn(`${message} ${fields ? JSON.stringify(fields) : ''}`),
      error: (message, fields) => hooks.error(`${message} ${fields ? JSON.stringify(fields) : ''}`),
    };
    runSession({
      identity: this.identity,
      store: memoryStore(
        (state, server) => {
          if (state === 'connected' && !this.ready) {
            this.server = server;
            this.markReady();
          }
        },
        // runSession saves only renewed identities (enrollment saved the first one).
        () => hooks.renewed(this),
      ),
      transport: { ...agentTransport, WebSocket: this.socketClass(localAddress) },
      logger,
      signal: this.controller.signal,
      hostFacts: this.hostFacts,
      // The periodic re-collection of host facts runs systeminformation: not simulated.
      reportIntervalMs: 86_400_000,
      // No state dir to keep the identity in: the store is in memory.
      keepIdentity: false,
    }).then(
      (code) => this.markEnded(code),
      (error) => {
        hooks.error(`runSession failed: ${(error as Error).message}`);
        this.markEnded(1);
      },
    );
  }

  async stop(): Promise<void> {
    this.controller?.abort();
  }

  fresh(): Sim {
    return new ProjectSim(this.identity, this.group, this.hooks, this.hostFacts);
  }

  /** A new, unstarted sim for the same connector that tries `servers` (replicas), from a random one on. */
  withServers(servers: string[]): ProjectSim {
    return new ProjectSim({ ...this.identity, servers }, this.group, this.hooks, this.hostFacts);
  }
}

const isFinal = (code: number) => code >= 4000 && code < 4100;

/** A baseline client: it needs only the baseline server's URL. */
abstract class BaselineSim extends Sim {
  constructor(
    id: string,
    group: Group,
    hooks: SimHooks,
    protected readonly serverUrl: string,
  ) {
    super(id, group, hooks);
  }
}

/** A bare `ws` client that reconnects with the agent's full-jitter backoff, as the agent would. */
export class BareSim extends BaselineSim {
  private ws: WebSocket | null = null;
  private stopping = false;
  private timer: NodeJS.Timeout | null = null;

  start(localAddress: string): void {
    this.started = true;
    const Socket = this.socketClass(localAddress);
    const url = `${this.serverUrl.replace(/^http/, 'ws')}/ws?id=${encodeURIComponent(this.id)}&group=${this.group}`;
    const connect = (attempt: number) => {
      const ws = new Socket(url);
      this.ws = ws;
      let opened = false;
      ws.on('open', () => {
        opened = true;
        this.markReady();
      });
      ws.on('error', () => {});
      ws.on('close', (code: number) => {
        if (this.stopping || isFinal(code)) return this.markEnded(isFinal(code) ? 4 : 0);
        const next = opened ? 0 : attempt + 1;
        this.timer = setTimeout(() => connect(next), fullJitterDelayMs(opened ? 0 : attempt));
      });
    };
    connect(0);
  }

  fresh(): Sim {
    return new BareSim(this.id, this.group, this.hooks, this.serverUrl);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close();
    if (!this.ws || this.ws.readyState === WebSocket.CLOSED) this.markEnded(0);
  }
}

/** A tRPC client of the minimal server's one subscription, with the agent's keepAlive and backoff. */
export class TrpcSim extends BaselineSim {
  private close: (() => void) | null = null;

  start(localAddress: string): void {
    this.started = true;
    const wsClient = createWSClient({
      url: `${this.serverUrl.replace(/^http/, 'ws')}/trpc`,
      WebSocket: this.socketClass(localAddress) as unknown as typeof globalThis.WebSocket,
      connectionParams: { id: this.id, group: this.group },
      retryDelayMs: (attempt) => fullJitterDelayMs(attempt),
      keepAlive: PROJECT_KEEPALIVE.client,
      onClose: (cause) => {
        const code = (cause as { code?: number } | undefined)?.code ?? 0;
        if (isFinal(code)) finish(4);
      },
    });
    const client = createTRPCClient<MinRouter>({ links: [wsLink({ client: wsClient })] });
    const subscription = client.session.subscribe(undefined, {
      onStarted: () => this.markReady(),
      onData: () => finish(4),
      onError: (error) => this.hooks.warn(`subscription error: ${error.message}`),
    });
    const finish = (code: number) => {
      if (this.ended) return;
      subscription.unsubscribe();
      void wsClient.close().catch(() => {});
      this.markEnded(code);
    };
    this.close = () => finish(0);
  }

  fresh(): Sim {
    return new TrpcSim(this.id, this.group, this.hooks, this.serverUrl);
  }

  async stop(): Promise<void> {
    this.close?.();
  }
}
