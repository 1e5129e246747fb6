import { randomUUID } from 'node:crypto';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import WebSocket from 'ws';
import { type AgentKeyPair, createProof, generateAgentKeyPair } from '../../agent/proof.js';
import { captureSessionNonce, sessionNonceOf } from '../../agent/transport.js';
import type { ProofBinding, SessionEvent } from '../../shared/protocol.js';
import type { AppRouter } from '../../shared/router-type.js';
import type { HostFacts } from '../../shared/schemas.js';
import { arrivals } from './arrivals.js';
import { rawCall } from './server.js';

export function hostFacts(name = 'sim-host'): HostFacts {
  return {
    hostname: name,
    os: 'Debian GNU/Linux',
    platform: 'linux',
    release: '6.1.0',
    arch: 'x64',
    cpus: 2,
    memoryBytes: 2 * 1024 ** 3,
    ips: ['127.0.0.1'],
    machineId: randomUUID(),
  };
}

export interface Enrolled {
  connectorId: string;
  groupId: string;
  identityToken: string;
  identityExpiresAt: string;
  keyPair: AgentKeyPair;
}

/** Enrolls like an agent would, over plain HTTP. */
export async function enrollSim(
  url: string,
  provisioningKey: string,
  name = 'sim-host',
  given?: Awaited<ReturnType<typeof generateAgentKeyPair>>,
) {
  const keyPair = given ?? (await generateAgentKeyPair());
  const r = await rawCall(url, 'agent.enroll', {
    provisioningKey,
    publicKey: keyPair.publicJwk,
    host: hostFacts(name),
    agentVersion: 'test',
    name,
  });
  return { ...r, enrolled: r.ok ? ({ ...r.data, keyPair } as Enrolled) : null };
}

export interface SimSession {
  events: SessionEvent[];
  closes: Array<{ code: number; reason: string }>;
  /** Resolves when an event of `type` has arrived (bounded by `timeoutMs`). */
  waitFor(type: SessionEvent['type'], timeoutMs?: number): Promise<SessionEvent>;
  waitForClose(timeoutMs?: number): Promise<{ code: number; reason: string }>;
  client: ReturnType<typeof createTRPCClient<AppRouter>>;
  close(): Promise<void>;
}

/** Makes a proof for one connection, given what the server asked it to be bound to. */
export type ProofMaker = (binding: ProofBinding) => Promise<string>;

/** connectionParams for a test session; a `proof` given as a maker signs the connection's own nonce. */
export interface SimParams {
  identity: string;
  proof: string | ProofMaker;
}

/** A proof maker for `identityToken` signed with `privateJwk`: what a real agent sends. */
export function proveWith(privateJwk: AgentKeyPair['privateJwk'], identityToken: string): ProofMaker {
  return (binding) => createProof(privateJwk, identityToken, binding);
}

/**
 * Opens an `agent.session` with chosen connectionParams (valid ones by default). It does not
 * reconnect: each test sees exactly the server's answer to one handshake. `sentProofs` lists the
 * proofs it sent, for replays.
 */
export function openSession(
  url: string,
  params: SimParams | (() => Promise<SimParams>),
  options: { localAddress?: string; htu?: string } = {},
): SimSession & { sentProofs: string[] } {
  const sentProofs: string[] = [];
  const events: SessionEvent[] = [];
  const closes: Array<{ code: number; reason: string }> = [];
  const { notify, until } = arrivals(
    () => `events=${JSON.stringify(events)} closes=${JSON.stringify(closes)}`,
  );
  const wsClient = createWSClient({
    url: `${url.replace(/^http/, 'ws')}/trpc`,
    WebSocket: fromAddress(options.localAddress) as unknown as typeof globalThis.WebSocket,
    connectionParams: async () => {
      const { identity, proof } = typeof params === 'function' ? await params() : params;
      const binding = {
        nonce: sessionNonceOf(wsClient.connection?.ws),
        htu: options.htu ?? new URL(url).origin,
      };
      const sent = typeof proof === 'function' ? await proof(binding) : proof;
      sentProofs.push(sent);
      return { identity, proof: sent };
    },
    retryDelayMs: () => 600_000,
    onClose: (cause) => {
      const c = cause as { code?: number; reason?: unknown };
      closes.push({ code: c?.code ?? 0, reason: String(c?.reason ?? '') });
      notify();
    },
  });
  const client = createTRPCClient<AppRouter>({ links: [wsLink({ client: wsClient })] });
  const sub = client.agent.session.subscribe(undefined, {
    onData: (e) => {
      events.push(e as SessionEvent);
      notify();
    },
    onError: () => notify(),
  });
  return {
    events,
    closes,
    sentProofs,
    client,
    waitFor: (type, timeoutMs = 5000) =>
      until(() => events.find((e) => e.type === type), timeoutMs, `event ${type}`),
    waitForClose: (timeoutMs = 5000) => until(() => closes[0], timeoutMs, 'close'),
    close: async () => {
      sub.unsubscribe();
      await wsClient.close();
    },
  };
}

/**
 * A websocket class that keeps the server's session nonce, as the agent's does, and whose
 * connections leave from `localAddress` (e.g. 127.0.0.2: another source address on loopback).
 */
function fromAddress(localAddress: string | undefined): typeof WebSocket {
  return class extends WebSocket {
    constructor(address: string | URL, protocols?: string | string[]) {
      super(address, protocols, localAddress ? { localAddress } : {});
      captureSessionNonce(this);
    }
  } as typeof WebSocket;
}

/** A session with a valid identity and a fresh proof. */
export function connectSim(
  url: string,
  enrolled: Pick<Enrolled, 'identityToken' | 'keyPair'>,
  options: { localAddress?: string; htu?: string } = {},
): SimSession {
  return openSession(
    url,
    {
      identity: enrolled.identityToken,
      proof: proveWith(enrolled.keyPair.privateJwk, enrolled.identityToken),
    },
    options,
  );
}
