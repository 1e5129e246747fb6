import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

const IDENTITY_FILE = 'identity.json';
const STATUS_FILE = 'status.json';

const savedIdentitySchema = z.object({
  connectorId: z.string(),
  groupId: z.string(),
  server: z.string(),
  identityToken: z.string(),
  identityExpiresAt: z.string(),
  /** The agent's Ed25519 private key (JWK): the identity is useless without it. */
  privateJwk: z.object({ kty: z.literal('OKP'), crv: z.literal('Ed25519'), x: z.string(), d: z.string() }),
  enrolledAt: z.string(),
});
export type SavedIdentity = z.infer<typeof savedIdentitySchema>;

export interface AgentStatus {
  state:
    | 'enrolling'
    | 'connecting'
    | 'connected'
    | 'disconnected'
    | 'stopped'
    | 'revoked'
    | 'deleted'
    | 'refused';
  status: 'enabled' | 'disabled' | null;
  connectorId: string | null;
  server: string | null;
  updatedAt: string;
  pid: number;
  detail: string | null;
}

/** The identity file was there but could not be used; the agent stops rather than overwrite it. */
export class IdentityFileError extends Error {}

/**
 * The agent's state dir: the identity (with its private key) in one file, mode 0600, replaced
 * atomically, so a crash leaves either the old identity or the new one, never a torn file.
 */
export class IdentityStore {
  constructor(readonly dir: string) {}

  get identityFile(): string {
    return join(this.dir, IDENTITY_FILE);
  }

  async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (((await stat(this.dir)).mode & 0o077) !== 0) await chmod(this.dir, 0o700);
  }

  async load(): Promise<SavedIdentity | null> {
    let text: string;
    try {
      text = await readFile(this.identityFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
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
    await writeAtomically(this.identityFile, JSON.stringify(identity, null, 2));
  }

  /** Removes the identity and its private key (revoked, deleted or expired). */
  async wipe(): Promise<void> {
    await unlink(this.identityFile).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
    await syncDir(this.dir);
  }

  async writeStatus(status: Omit<AgentStatus, 'updatedAt' | 'pid'>): Promise<void> {
    const full: AgentStatus = { ...status, updatedAt: new Date().toISOString(), pid: process.pid };
    await writeAtomically(join(this.dir, STATUS_FILE), JSON.stringify(full, null, 2)).catch(() => {});
  }

  async readStatus(): Promise<AgentStatus | null> {
    try {
      return JSON.parse(await readFile(join(this.dir, STATUS_FILE), 'utf8')) as AgentStatus;
    } catch {
      return null;
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
  await syncDir(join(file, '..'));
}
