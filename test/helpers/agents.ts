import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { AgentConfig } from '../../agent/config.js';
import { type AgentStatus, IdentityStore } from '../../agent/identity-store.js';
import type { AdminClient } from '../../server/admin-client.js';
import { type Proc, spawnProcess, spawnTs } from './processes.js';

/**
 * The acknowledgement bound for tests that expect a real agent process to confirm a revoke or
 * delete: the product's 750 ms holds on an idle machine, but a node process starting its reply on
 * two cores shared with a whole test suite can take longer, and then the answer is (rightly)
 * `pending`. Tests of the bound itself keep the default.
 */
export const ACK_BOUND_UNDER_LOAD_MS = 10_000;

export interface AgentProc extends Proc {
  stateDir: string;
}

/** The agent CLI from source, as its own process (as another user when root gives `user`). */
export function spawnAgent(
  args: string[],
  stateDir: string,
  env: NodeJS.ProcessEnv = {},
  options: { user?: { uid: number; gid: number } } = {},
): AgentProc {
  const proc = spawnTs('agent/main.ts', [...args, '--state-dir', stateDir], {
    env: { ...process.env, ...env },
    ...(options.user ? { user: options.user } : {}),
  });
  return { ...proc, stateDir };
}

/** The built single executable, from a folder outside the repo, with no node on PATH. */
export function spawnBinary(binary: string, args: string[], stateDir: string, cwd: string): AgentProc {
  const proc = spawnProcess(binary, [...args, '--state-dir', stateDir], {
    cwd,
    env: { PATH: '/nonexistent', HOME: cwd },
  });
  return { ...proc, stateDir };
}

export async function readIdentity(stateDir: string): Promise<{
  connectorId: string;
  identityToken: string;
  privateJwk: { kty: 'OKP'; crv: 'Ed25519'; x: string; d: string };
} | null> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'identity.json'), 'utf8'));
  } catch {
    return null;
  }
}

export async function identityMode(stateDir: string): Promise<number> {
  return (await stat(join(stateDir, 'identity.json'))).mode & 0o777;
}

/** Polls the admin API (bounded) until `check` holds. */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; Date.now() < deadline && i < 2000; i++) {
    const value = await probe();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out: ${what}`);
}

export async function waitConnected(admin: AdminClient, name: string, timeoutMs = 20_000) {
  return eventually(
    `${name} connected`,
    async () =>
      (await admin.connectors.list.query({ connection: 'connected', limit: 1000 })).items.find(
        (c) => c.name === name,
      ),
    timeoutMs,
  );
}

/**
 * Polls the agent's status file (what `connector-agent status` reads) until `matches` holds: the
 * agent's own account of its state, written after the log line that tells of it.
 */
export async function waitForAgentStatus(
  stateDir: string,
  what: string,
  matches: (status: AgentStatus) => boolean,
  timeoutMs = 20_000,
): Promise<AgentStatus> {
  const store = new IdentityStore(stateDir);
  return eventually(
    what,
    async () => {
      const status = await store.readStatus();
      return status && matches(status) ? status : null;
    },
    timeoutMs,
  );
}

/** An agent's configuration as its CLI would make it: no key, text logs, nothing allowed; `given` set. */
export function agentConfig(
  given: Pick<AgentConfig, 'servers' | 'stateDir'> & Partial<AgentConfig>,
): AgentConfig {
  return {
    provisioningKey: null,
    keyFileProblem: null,
    keyExposure: null,
    name: null,
    caPem: null,
    allowInsecure: false,
    allowServerChange: false,
    logFormat: 'text',
    ...given,
  };
}
