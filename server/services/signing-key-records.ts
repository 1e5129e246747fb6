import { createPublicKey, type KeyObject } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { DataFileError } from '../store/data-file.js';
import { JsonDocumentFile, type KeptDocument } from '../store/durable-files.js';
import { ed25519Thumbprint } from './jws.js';

// The signing keys as stored (the keys document: a file, or a sealed row shared by replicas) and as
// the IdentityAuthority holds them.

export interface StoredSigningKey {
  kid: string;
  createdAt: string;
  /**
   * From when the key signs new identities (ISO); the key with the latest `activateAt` not in the
   * future signs. Null: it never signs, only verifies. Absent in files from before rotation, which
   * marked the signer `active: true` instead.
   */
  activateAt?: string | null;
  /** When it was retired (ISO): no longer published nor trusted, and its private half is gone. */
  retiredAt?: string | null;
  /** Only in files from before rotation. */
  active?: boolean;
  privateJwk: JWK;
}

export interface SigningKeyFile {
  keys: StoredSigningKey[];
}

/** `active` signs new identities; `published` is in the JWKS and verifies (before its activation too); `retired` is neither. */
export type SigningKeyState = 'active' | 'published' | 'retired';

export interface SigningKeyInfo {
  kid: string;
  algorithm: typeof ALG;
  state: SigningKeyState;
  createdAt: number;
  /** When it became or becomes the signing key; null if it never does. */
  activateAt: number | null;
  retiredAt: number | null;
}

export const ALG = 'EdDSA';

/** A key as the authority holds it: times in ms, the imported private key while it may sign. */
export interface HeldKey {
  stored: StoredSigningKey;
  createdAt: number;
  activateAt: number | null;
  retiredAt: number | null;
  signingKey: Awaited<ReturnType<typeof importJWK>> | null;
  publicJwk: JWK;
  verifyKey: KeyObject;
}

/** The stored keys, or undefined when there are none yet; a file that cannot be read is a DataFileError. */
export async function readKeys(document: KeptDocument<SigningKeyFile>): Promise<SigningKeyFile | undefined> {
  try {
    return await document.read();
  } catch (error) {
    if (!(document instanceof JsonDocumentFile)) throw error;
    throw new DataFileError(
      document.location,
      `the signing key file cannot be read or parsed (${(error as Error).message}); restore it from a backup (identities it signed cannot be checked without it)`,
    );
  }
}

export async function holdKeys(
  document: KeptDocument<SigningKeyFile>,
  stored: SigningKeyFile | undefined,
): Promise<HeldKey[]> {
  return Promise.all((Array.isArray(stored?.keys) ? stored.keys : []).map(holdKey)).catch((error: Error) => {
    throw new DataFileError(
      document.location,
      `holds a damaged signing key (${error.message}); restore it from a backup`,
    );
  });
}

/** A fresh Ed25519 signing key that signs from `activateAt`. */
export async function newSigningKey(now: number, activateAt: number): Promise<StoredSigningKey> {
  // The kid (the key's RFC 7638 thumbprint, base64url) is typed on command lines
  // (`signing-keys retire <kid>`): one starting with '-' would read as an option there, so such a
  // key (1 in 64) is drawn again. Bounded: 20 draws all starting with '-' has odds of 64^-20.
  for (let draw = 1; ; draw++) {
    const { privateKey } = await generateKeyPair(ALG, { crv: 'Ed25519', extractable: true });
    const privateJwk = await exportJWK(privateKey);
    const kid = ed25519Thumbprint({ kty: privateJwk.kty!, crv: privateJwk.crv!, x: privateJwk.x! });
    if (!kid.startsWith('-') || draw >= 20) return signingKeyRecord(kid, privateJwk, now, activateAt);
  }
}

function signingKeyRecord(
  kid: string,
  privateJwk: StoredSigningKey['privateJwk'],
  now: number,
  activateAt: number,
): StoredSigningKey {
  return {
    kid,
    createdAt: new Date(now).toISOString(),
    activateAt: new Date(activateAt).toISOString(),
    retiredAt: null,
    privateJwk,
  };
}

const msOf = (iso: string | null | undefined): number | null => (iso ? Date.parse(iso) : null);

/** Reads a stored key, including one from a file written before rotation (`active: true` marked the signer). */
export async function holdKey(stored: StoredSigningKey): Promise<HeldKey> {
  const createdAt = Date.parse(stored.createdAt);
  const activateAt =
    stored.activateAt === undefined ? (stored.active ? createdAt : null) : msOf(stored.activateAt);
  const retiredAt = msOf(stored.retiredAt);
  const { d, ...pub } = stored.privateJwk;
  const publicJwk: JWK = { ...pub, kid: stored.kid, alg: ALG, use: 'sig' };
  const { active: _legacy, ...current } = stored;
  return {
    stored: {
      ...current,
      activateAt: activateAt === null ? null : new Date(activateAt).toISOString(),
      retiredAt: stored.retiredAt ?? null,
    },
    createdAt,
    activateAt,
    retiredAt,
    signingKey: retiredAt === null && d ? await importJWK(stored.privateJwk, ALG) : null,
    publicJwk,
    verifyKey: createPublicKey({ key: publicJwk, format: 'jwk' }),
  };
}

/** The key retired at `now`: only its public half is kept. */
export function retiredCopy(k: HeldKey, now: number): HeldKey {
  const { d: _private, ...pub } = k.stored.privateJwk;
  return {
    ...k,
    stored: { ...k.stored, retiredAt: new Date(now).toISOString(), privateJwk: pub },
    retiredAt: now,
    signingKey: null,
  };
}

export function info(k: HeldKey, signer: HeldKey | null): SigningKeyInfo {
  return {
    kid: k.stored.kid,
    algorithm: ALG,
    state: k.retiredAt !== null ? 'retired' : k === signer ? 'active' : 'published',
    createdAt: k.createdAt,
    activateAt: k.activateAt,
    retiredAt: k.retiredAt,
  };
}
