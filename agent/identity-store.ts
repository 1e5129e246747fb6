import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ensurePrivateDir, readFileNoFollow, syncDir, writeFileDurably } from '../shared/private-files.js';
import { processStartTicks } from './process-liveness.js';

const IDENTITY_FILE = 'identity.json';
const STATUS_FILE = 'status.json';

const savedIdentitySchema = z.object({
  connectorId: z.string(),
  groupId: z.string(),
  /** The server it enrolled through (and, before lists existed, the only one it may be presented to). */
  server: z.string(),
  /** Every server it may be presented to: the --server list at enrollment (absent: just `server`). */
  servers: z.array(z.string()).optional(),
  identityToken: z.string(),
  identityExpiresAt: z.string(),
  /** The agent's Ed25519 private key (JWK): the identity is useless without it. */
  privateJwk: z.object({ kty: z.literal('OKP'), crv: z.literal('Ed25519'), x: z.string(), d: z.string() }),
  enrolledAt: z.string(),
});
export type SavedIdentity = z.infer<typeof savedIdentitySchema>;

/** The servers an identity may be presented to. */
export function serversOf(identity: SavedIdentity): string[] {
  return identity.servers ?? [identity.server];
}

export interface AgentStatus {
  state:
    | 'enrolling'
    | 'connecting'
    | 'connected'
    | 'disconnected'
    | 'stopped'
    | 'revoked'
    | 'deleted'
    | 'refused'
    /** Another process with this identity took the session (exit 6). */
    | 'replaced'
    /** Stopped on a TLS misconfiguration (exit 2). */
    | 'misconfigured';
  status: 'enabled' | 'disabled' | null;
  connectorId: string | null;
  server: string | null;
  updatedAt: string;
  pid: number;
  /** When `pid` started (clock ticks since boot, Linux): tells it from a later process given the same pid. */
  pidStart?: number | null;
  detail: string | null;
}

/** States the agent writes as it exits: after one of them no process runs, whatever the pid now names. */
export const FINAL_STATES: ReadonlySet<AgentStatus['state']> = new Set([
  'stopped',
  'revoked',
  'deleted',
  'refused',
  'replaced',
  'misconfigured',
]);

let ownStart: number | null = null;

/** The identity file was there but could not be used; the agent stops rather than overwrite it. */
export class IdentityFileError extends Error {}

/**
 * The agent's state dir: the identity (with its private key) in one file, mode 0600, replaced
 * atomically, so a crash leaves either the old identity or the new one, never a torn file. The dir
 * must be this user's, and no file in it is written or read through a link.
 */
export class IdentityStore {
  private statusWrites: Promise<void> = Promise.resolve();

  constructor(readonly dir: string) {}

  get identityFile(): string {
    return join(this.dir, IDENTITY_FILE);
  }

  /** Creates the dir, or checks it: throws PrivateDirError if another user owns it. */
  async ensureDir(): Promise<void> {
    await ensurePrivateDir(this.dir, { what: 'state dir', flag: '--state-dir' });
  }

  async load(): Promise<SavedIdentity | null> {
    let text: string;
    try {
      text = await readFileNoFollow(this.identityFile);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return null;
      if (code === 'ELOOP')
        throw new IdentityFileError(
          `${this.identityFile} is a symbolic link; the agent uses only a file of its own there. ` +
            "Remove the link, and put the identity file itself in its place if it is this host's.",
        );
      throw new IdentityFileError(`${this.identityFile} cannot be read: ${(error as Error).message}`);
    }
    try {
      return savedIdentitySchema.parse(JSON.parse(text));
    } catch {
      throw new IdentityFileError(
        `${this.identityFile} is damaged (not a valid identity). It was left untouched: restore it from a backup, ` +
          'or remove it to enroll this host again with a current provisioning key.',
      );
    }
  }

  async save(identity: SavedIdentity): Promise<void> {
    await writeFileDurably(this.identityFile, JSON.stringify(identity, null, 2));
  }

  /** Removes the identity and its private key (revoked, deleted or expired). */
  async wipe(): Promise<void> {
    await unlink(this.identityFile).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await syncDir(this.dir);
  }

  async writeStatus(status: Omit<AgentStatus, 'updatedAt' | 'pid' | 'pidStart'>): Promise<void> {
    ownStart ??= processStartTicks(process.pid);
    const full: AgentStatus = {
      ...status,
      updatedAt: new Date().toISOString(),
      pid: process.pid,
      pidStart: ownStart,
    };
    // One at a time, in call order: two durable writes in flight land in either order, and a
    // 'disconnected' still on its way could otherwise overwrite the 'stopped' written at exit.
    const write = () =>
      writeFileDurably(join(this.dir, STATUS_FILE), JSON.stringify(full, null, 2)).catch(() => {});
    this.statusWrites = this.statusWrites.then(write);
    await this.statusWrites;
  }

  async readStatus(): Promise<AgentStatus | null> {
    try {
      return JSON.parse(await readFileNoFollow(join(this.dir, STATUS_FILE))) as AgentStatus;
    } catch {
      return null;
    }
  }
}
