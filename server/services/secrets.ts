import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { KeyPrefix } from '../../shared/protocol.js';

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/**
 * Random bytes for ids, drawn from a pooled CSPRNG buffer: one randomBytes call per id cost ~25 µs
 * of the connect path (every audit event has an id). Ids name things; they are not secrets.
 */
let idPool = Buffer.alloc(0);
let idPoolOffset = 0;
function idBytes(length: number): Buffer {
  if (idPoolOffset + length > idPool.length) {
    idPool = randomBytes(Math.max(4096, length));
    idPoolOffset = 0;
  }
  const bytes = idPool.subarray(idPoolOffset, idPoolOffset + length);
  idPoolOffset += length;
  return bytes;
}

/** A random lower-case id such as `grp_k3x9…` (16 characters ≈ 82 bits: unguessable, not a secret). */
export function randomId(prefix: string, length = 16): string {
  const bytes = idBytes(length);
  let out = '';
  for (const byte of bytes) out += ID_ALPHABET[byte % ID_ALPHABET.length];
  return `${prefix}_${out}`;
}

/**
 * The id of the connector that `keyThumbprint` enrolls in `groupId`: the same for every attempt of
 * one enrollment (the agent keeps its key pair across retries and restarts), so an attempt whose
 * answer was lost finds the connector the first one made instead of making another. Drawn from the
 * agent's fresh key, it is as unguessable as a random id.
 */
export function enrolledConnectorId(groupId: string, keyThumbprint: string, length = 16): string {
  const digest = createHash('sha256').update(`connector:${groupId}:${keyThumbprint}`).digest();
  let out = '';
  for (let i = 0; i < length; i++) out += ID_ALPHABET[digest[i]! % ID_ALPHABET.length];
  return `con_${out}`;
}

export interface GeneratedKey {
  /** The public part: safe to log and to rate-limit on. */
  id: string;
  /** The whole key as the user copies it. */
  key: string;
  hash: string;
}

/**
 * Makes a key `<prefix><id>_<secret>` with 256 random bits in the secret. Carrying the id lets the
 * server find the record without comparing secrets and rate-limit guesses against one key.
 */
export function generateKey(prefix: KeyPrefix, idPrefix: string): GeneratedKey {
  const id = randomId(idPrefix, 12);
  const key = `${prefix}${id.slice(idPrefix.length + 1)}_${randomBytes(32).toString('base64url')}`;
  return { id, key, hash: hashKey(key) };
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Compares a presented key against a stored hash in constant time. */
export function keyMatches(presented: string, storedHash: string): boolean {
  const a = Buffer.from(hashKey(presented), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** AES-256-GCM under the server secret, so admins can view a current key that is stored encrypted. */
export class SecretBox {
  constructor(private readonly secret: Buffer) {
    if (secret.length !== 32) throw new TypeError('SecretBox needs a 32-byte secret');
  }

  seal(plaintext: string, associatedData: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.secret, iv);
    cipher.setAAD(Buffer.from(associatedData));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [iv, cipher.getAuthTag(), body].map((b) => b.toString('base64url')).join('.');
  }

  open(sealed: string, associatedData: string): string {
    const [iv, tag, body] = sealed.split('.').map((part) => Buffer.from(part, 'base64url'));
    if (!iv || !tag || !body) throw new Error('sealed value is malformed');
    const decipher = createDecipheriv('aes-256-gcm', this.secret, iv);
    decipher.setAAD(Buffer.from(associatedData));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
  }
}
