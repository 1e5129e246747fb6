import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  ensurePrivateDir,
  NOT_A_FILE,
  readFileNoFollow,
  syncDir,
  writeFileDurably,
} from '../shared/private-files.js';
import { processStartTicks } from './process-liveness.js';
import type { AgentKeyPair } from './proof.js';

const IDENTITY_FILE = 'identity.json';
const STATUS_FILE = 'status.json';
/** The key pair of an enrollment under way: kept until its identity is saved (see enrollmentKeyPair). */
const ENROLLMENT_KEY_FILE = 'enrollment-key.json';

const privateJwkSchema = z.object({
  kty: z.literal('OKP'),
  crv: z.literal('Ed25519'),
  x: z.string(),
  d: z.string(),
});

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
  privateJwk: privateJwkSchema,
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
export class IdentityFileError extends Error {
  constructor(
    message: string,
    /**
     * Whether only a person can fix it (damaged, a link, another user's): a restart finds the same
     * file. False for a read error that may pass (EIO and the like).
     */
    readonly needsFixing = true,
  ) {
    super(message);
  }
}

/**
 * The agent's state dir: the identity (with its private key) in one file, mode 0600, replaced
 * atomically, so a crash leaves either the old identity or the new one, never a torn file. The dir
 * must be this user's, and no file in it is written or read through a link.
 */
export class IdentityStore {
  private statusWrites: Promise<void> = Promise.resolve();
  private statusWriteFailed = false;
  private lastStatus: Omit<AgentStatus, 'updatedAt' | 'pid' | 'pidStart'> | undefined;

  constructor(
    readonly dir: string,
    /** Told of the first status write that fails (a full or read-only dir): `status` then shows old news. */
    private readonly onStatusWriteFailed: (error: Error) => void = () => {},
  ) {}

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
      // ENOTDIR: the state dir itself is gone, and something else is in its place.
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      if (code === 'ELOOP')
        throw new IdentityFileError(
          `${this.identityFile} is a symbolic link; the agent uses only a file of its own there. ` +
            "Remove the link, and put the identity file itself in its place if it is this host's.",
        );
      // A container's volume mounted from a host file not made yet is a directory: so at every start.
      if (code === 'EISDIR')
        throw new IdentityFileError(
          `${this.identityFile} is a directory, not the identity file: remove it (or mount the identity file itself there) and start the agent again.`,
        );
      if (code === NOT_A_FILE)
        throw new IdentityFileError(
          `${this.identityFile} is not a regular file (a FIFO, a socket or a device): remove it, and put the identity file itself in its place if it is this host's.`,
        );
      if (code === 'EACCES' || code === 'EPERM')
        throw new IdentityFileError(
          `${this.identityFile} cannot be read by this user (${code}): run this as the agent's user (root with the packaged unit), e.g. with sudo`,
        );
      throw new IdentityFileError(`${this.identityFile} cannot be read: ${(error as Error).message}`, false);
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

  /**
   * The key pair to enroll with: the one an earlier attempt saved, or a new one (`make`), saved
   * before any request carries it. The server derives the connector's id from it, so every attempt
   * of one enrollment (retries, and a restart after a timeout, a stop or a failed save) lands on one
   * connector. Saving it first also finds a full or read-only state dir before the key is spent.
   * The pair is kept with the id of the provisioning key it was for: given another key (the group's
   * was regenerated, or a revoke replaced it, after an attempt that never finished), it is a new
   * enrollment with a new pair, since the server refuses one pair enrolling with two keys.
   */
  async enrollmentKeyPair(make: () => Promise<AgentKeyPair>, forKeyId: string | null): Promise<AgentKeyPair> {
    const file = join(this.dir, ENROLLMENT_KEY_FILE);
    try {
      const saved = JSON.parse(await readFileNoFollow(file)) as { forKeyId?: unknown };
      const privateJwk = privateJwkSchema.parse(saved);
      // A file from before the key id was kept has none: it is used as it is, as it was then.
      if (saved.forKeyId === undefined || saved.forKeyId === forKeyId) {
        const { kty, crv, x } = privateJwk;
        return { privateJwk, publicJwk: { kty, crv, x } };
      }
    } catch {
      // None yet, or unreadable: a new pair (an unreadable one enrolled nothing this agent can use).
    }
    const pair = await make();
    await writeFileDurably(file, JSON.stringify({ ...pair.privateJwk, forKeyId }));
    return pair;
  }

  /** The enrollment is done (its identity saved) or abandoned: its key pair goes. */
  async dropEnrollmentKey(): Promise<void> {
    await removeEntry(join(this.dir, ENROLLMENT_KEY_FILE));
    await syncDirIfThere(this.dir);
  }

  /**
   * Removes the identity of `connectorId` and its private key (revoked, deleted or expired), and any
   * enrollment key pair. An identity file that names another connector (copied over this one while
   * the agent ran) is not this agent's to remove: 'not ours', left as it is.
   */
  async wipe(connectorId?: string): Promise<'wiped' | 'not ours'> {
    if (connectorId !== undefined) {
      const current = await this.load().catch(() => null);
      if (current && current.connectorId !== connectorId) return 'not ours';
    }
    await removeEntry(this.identityFile);
    await removeEntry(join(this.dir, ENROLLMENT_KEY_FILE));
    await syncDirIfThere(this.dir);
    return 'wiped';
  }

  async writeStatus(status: Omit<AgentStatus, 'updatedAt' | 'pid' | 'pidStart'>): Promise<void> {
    this.lastStatus = status;
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
      writeFileDurably(join(this.dir, STATUS_FILE), JSON.stringify(full, null, 2)).then(
        () => {
          this.statusWriteFailed = false;
        },
        (error: Error) => {
          if (!this.statusWriteFailed) this.onStatusWriteFailed(error);
          this.statusWriteFailed = true;
        },
      );
    this.statusWrites = this.statusWrites.then(write);
    await this.statusWrites;
  }

  /** Writes the last status again: the file went with a state dir removed while the agent ran. */
  async rewriteStatus(): Promise<void> {
    if (this.lastStatus) await this.writeStatus(this.lastStatus);
  }

  async readStatus(): Promise<AgentStatus | null> {
    try {
      return JSON.parse(await readFileNoFollow(join(this.dir, STATUS_FILE))) as AgentStatus;
    } catch {
      return null;
    }
  }
}

/** Removes `file`; one already gone is fine. */
async function removeEntry(file: string): Promise<void> {
  await unlink(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}

/** Makes removals in `dir` durable; a dir removed meanwhile holds nothing to make durable. */
async function syncDirIfThere(dir: string): Promise<void> {
  await syncDir(dir).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
}
