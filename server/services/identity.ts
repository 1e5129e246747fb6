import { createHash, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import { type JWK, SignJWT } from 'jose';
import { DomainError } from '../../shared/errors.js';
import { IDENTITY_AUDIENCE, PROOF_MAX_SKEW_MS, PROOF_TYPE } from '../../shared/protocol.js';
import type { Clock } from '../clock.js';
import { DataFileError } from '../store/data-file.js';
import {
  DocumentConflict,
  DocumentWriteUnconfirmed,
  JsonDocumentFile,
  type KeptDocument,
} from '../store/durable-files.js';
import { ChangeUnconfirmed, type LateOutcome } from '../store/store.js';
import { checkJwtClaims, ed25519PublicKey, ed25519Thumbprint, verifyEd25519Jws } from './jws.js';
import {
  ALG,
  type HeldKey,
  holdKey,
  holdKeys,
  info,
  newSigningKey,
  readKeys,
  retiredCopy,
  type SigningKeyFile,
  type SigningKeyInfo,
} from './signing-key-records.js';

export {
  newSigningKey,
  type SigningKeyFile,
  type SigningKeyInfo,
  type SigningKeyState,
  type StoredSigningKey,
} from './signing-key-records.js';

export interface IdentityClaims {
  connectorId: string;
  groupId: string;
  provisioningKeyId: string;
  jkt: string;
  issuedAt: number;
  expiresAt: number;
  keyId: string;
}

export interface IssuedIdentity {
  token: string;
  issuedAt: number;
  expiresAt: number;
  keyId: string;
}

/**
 * Signs and checks connector identities (EdDSA JWTs). Keys live in one file (mode 0600) that holds
 * several: every key not retired is published in the JWKS and verifies; the one whose activation
 * time is the latest not in the future signs, decided at each `issue()`, so a rotation scheduled for
 * later takes effect by the clock alone. Rotation and retirement rewrite the file durably first.
 * Kept in the database, the keys are shared by the replicas: a change another replica wrote is read
 * when the document says so (`watch`), and a change that lost a race to one is redone over it.
 */
export class IdentityAuthority {
  private keys: HeldKey[];
  /** Rotations and retirements, one at a time: each reads the keys the previous one wrote. */
  private changes: Promise<unknown> = Promise.resolve();

  /** Stops following the document's changes (see `close`). */
  private unwatch: (() => void) | null = null;

  private constructor(
    keys: HeldKey[],
    /** Where the keys are kept; null: in memory only. */
    private readonly file: KeptDocument<SigningKeyFile> | null,
    private readonly issuer: string,
    private readonly clock: Clock,
  ) {
    this.keys = keys;
  }

  /**
   * Loads the signing keys from `file` (a path: a file of the data dir; or a document kept
   * elsewhere), creating a first key when there is none. Throws DataFileError, or what the document
   * throws for a cause of its own (a secret that cannot open it).
   */
  static async open(
    file: string | KeptDocument<SigningKeyFile>,
    options: { issuer: string; clock: Clock },
  ): Promise<IdentityAuthority> {
    const document: KeptDocument<SigningKeyFile> =
      typeof file === 'string' ? new JsonDocumentFile<SigningKeyFile>(file) : file;
    let stored = await readKeys(document);
    if (stored === undefined) {
      stored = { keys: [await newSigningKey(options.clock.now(), options.clock.now())] };
      try {
        await document.write(stored);
      } catch (error) {
        // Another replica made the first key meanwhile: use that one.
        if (!(error instanceof DocumentConflict)) throw error;
        stored = await readKeys(document);
      }
    }
    const keys = await holdKeys(document, stored);
    const authority = new IdentityAuthority(keys, document, options.issuer, options.clock);
    if (!authority.signer()) {
      // Made by another replica a moment ago, by its clock: this host's may be behind it.
      const next = keys
        .filter((k) => k.retiredAt === null && k.activateAt !== null && k.signingKey)
        .reduce<number | null>((min, k) => (min === null || k.activateAt! < min ? k.activateAt : min), null);
      const behind =
        next === null
          ? ''
          : `; the first activates at ${new Date(next).toISOString()}, ${Math.ceil((next - options.clock.now()) / 1000)} s from now by this host's clock: if it was made just now, this host's clock is behind (fix its time sync: NTP, chrony, timedatectl)`;
      throw new DataFileError(
        document.location,
        `no signing key is active (none has an activation time that has come)${behind}`,
      );
    }
    authority.unwatch = document.watch?.(() => void authority.reload().catch(() => {})) ?? null;
    return authority;
  }

  /**
   * Reads the keys again (another replica changed them), in turn with this one's changes. A document
   * that cannot be used leaves the keys as they were (and rejects).
   */
  reload(): Promise<void> {
    const run = async () => {
      if (!this.file) return;
      this.keys = await holdKeys(this.file, await readKeys(this.file));
    };
    const next = this.changes.then(run, run);
    this.changes = next.catch(() => undefined);
    return next;
  }

  /** Stops following the document's changes (the document itself is its owner's to close). */
  close(): void {
    this.unwatch?.();
    this.unwatch = null;
  }

  /** An authority with one fresh signing key that lives only in memory: for tests and throwaway servers. */
  static async inMemory(options: { issuer: string; clock: Clock }): Promise<IdentityAuthority> {
    const now = options.clock.now();
    const key = await holdKey(await newSigningKey(now, now));
    return new IdentityAuthority([key], null, options.issuer, options.clock);
  }

  /** The public keys not retired (the signing one, older ones, and one waiting for its activation), for `/.well-known/jwks.json`. */
  publicKeySet(): { keys: JWK[] } {
    return { keys: this.keys.filter((k) => k.retiredAt === null).map((k) => k.publicJwk) };
  }

  /** The content of the signing-key file as it stands (for backups): private halves included. */
  keyFileContent(): SigningKeyFile {
    return { keys: this.keys.map((k) => k.stored) };
  }

  /** The kid that signs identities issued now. */
  get activeKeyId(): string {
    return this.requireSigner().stored.kid;
  }

  /** The kids of retired keys: what they signed is no longer accepted. */
  retiredKeyIds(): Set<string> {
    return new Set(this.keys.filter((k) => k.retiredAt !== null).map((k) => k.stored.kid));
  }

  /** Every key, oldest first, with its state now. */
  list(): SigningKeyInfo[] {
    const signer = this.signer();
    return this.keys.map((k) => info(k, signer));
  }

  /**
   * Creates a key, published at once, that signs from `now + activateInMs`. A rotation still
   * waiting for its activation is replaced: its key, which has signed nothing, is retired.
   */
  rotate(activateInMs: number): Promise<{ key: SigningKeyInfo; cancelled: string[] }> {
    if (!(activateInMs >= 0)) throw new TypeError('activateInMs must be zero or more milliseconds');
    return this.change(async (now) => {
      const pending = this.keys.filter(
        (k) => k.retiredAt === null && k.activateAt !== null && k.activateAt > now,
      );
      const created = await holdKey(await newSigningKey(now, now + activateInMs));
      const kept = this.keys.map((k) => (pending.includes(k) ? retiredCopy(k, now) : k));
      return {
        keys: [...kept, created],
        result: (signer: HeldKey | null) => ({
          key: info(created, signer),
          cancelled: pending.map((k) => k.stored.kid),
        }),
      };
    });
  }

  /**
   * Retires a key: out of the JWKS and of verification, its private half dropped from the file.
   * Throws SIGNING_KEY_NOT_FOUND, or SIGNING_KEY_ACTIVE for the key that signs now. Retiring a
   * retired key changes nothing.
   */
  retire(kid: string): Promise<SigningKeyInfo> {
    return this.change(async (now) => {
      const target = this.keys.find((k) => k.stored.kid === kid);
      if (!target) throw new DomainError('SIGNING_KEY_NOT_FOUND');
      if (target === this.signer(now)) throw new DomainError('SIGNING_KEY_ACTIVE');
      if (target.retiredAt !== null) return { keys: this.keys, result: (signer) => info(target, signer) };
      const retired = retiredCopy(target, now);
      return {
        keys: this.keys.map((k) => (k === target ? retired : k)),
        result: (signer) => info(retired, signer),
      };
    });
  }

  /** The key that signs at `now` (see signerOf). */
  private signer(now = this.clock.now()): HeldKey | null {
    return signerOf(this.keys, now);
  }

  private requireSigner(): HeldKey {
    const signer = this.signer();
    if (!signer) throw new Error('no signing key is active');
    return signer;
  }

  /** Runs one change after the previous: computes the new keys, writes them durably, then uses them. */
  private change<T>(
    compute: (now: number) => Promise<{ keys: HeldKey[]; result: (signer: HeldKey | null) => T }>,
  ): Promise<T> {
    const run = async () => {
      // Bounded: a change that lost a race to another replica reads its keys and is redone over them.
      for (let attempt = 1; ; attempt++) {
        const now = this.clock.now();
        const { keys, result } = await compute(now);
        if (keys !== this.keys && this.file) {
          try {
            await this.file.write({ keys: keys.map((k) => k.stored) });
          } catch (error) {
            if (error instanceof DocumentWriteUnconfirmed) throw unconfirmed(error, keys, result, now);
            if (!(error instanceof DocumentConflict) || attempt >= MAX_CHANGE_ATTEMPTS)
              throw new DomainError('STORE_UNAVAILABLE');
            this.keys = await holdKeys(this.file, await readKeys(this.file)).catch(() => {
              throw new DomainError('STORE_UNAVAILABLE');
            });
            continue;
          }
        }
        this.keys = keys;
        return result(this.signer(now));
      }
    };
    const next = this.changes.then(run, run);
    this.changes = next.catch(() => undefined);
    return next;
  }

  async issue(
    claims: Omit<IdentityClaims, 'issuedAt' | 'expiresAt' | 'keyId'>,
    lifetimeMs: number,
  ): Promise<IssuedIdentity> {
    const signer = this.requireSigner();
    // JWT times are whole seconds: keep the record's times equal to the token's.
    const issuedAt = Math.floor(this.clock.now() / 1000) * 1000;
    const expiresAt = Math.floor((issuedAt + lifetimeMs) / 1000) * 1000;
    const token = await new SignJWT({
      group_id: claims.groupId,
      provisioning_key_id: claims.provisioningKeyId,
      cnf: { jkt: claims.jkt },
    })
      .setProtectedHeader({ alg: ALG, kid: signer.stored.kid, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setSubject(claims.connectorId)
      .setAudience(IDENTITY_AUDIENCE)
      .setJti(randomBytes(16).toString('base64url'))
      .setIssuedAt(issuedAt / 1000)
      .setExpirationTime(expiresAt / 1000)
      .sign(signer.signingKey!);
    return { token, issuedAt, expiresAt, keyId: signer.stored.kid };
  }

  /** Checks an identity token: signature by one of our keys, EdDSA only, issuer, audience, expiry. */
  async verifyIdentity(token: string): Promise<IdentityClaims> {
    // A kid this server never had (retired ones stay listed) is not a forgery it can tell: it is
    // another deployment's identity, or this server lost its keys. Said apart, so that the agent
    // keeps an identity its own deployment may still accept.
    let unknownSigner = false;
    const verified = verifyEd25519Jws(token, (header) => {
      if (typeof header.kid !== 'string') return null;
      unknownSigner = !this.keys.some((k) => k.stored.kid === header.kid);
      return this.verifyKeyOf(header.kid);
    });
    if (!verified) throw new DomainError(unknownSigner ? 'IDENTITY_UNKNOWN_SIGNER' : 'IDENTITY_INVALID');
    const problem = checkJwtClaims(verified, {
      now: this.clock.now(),
      required: ['sub', 'exp', 'iat', 'jti'],
      issuer: this.issuer,
      audience: IDENTITY_AUDIENCE,
    });
    if (problem === 'expired') throw new DomainError('IDENTITY_EXPIRED');
    if (problem) throw new DomainError('IDENTITY_INVALID');
    const { payload, header } = verified;
    const cnf = payload.cnf as { jkt?: unknown } | undefined;
    if (
      typeof payload.sub !== 'string' ||
      typeof payload.group_id !== 'string' ||
      typeof payload.provisioning_key_id !== 'string' ||
      typeof cnf?.jkt !== 'string'
    ) {
      throw new DomainError('IDENTITY_INVALID');
    }
    return {
      connectorId: payload.sub,
      groupId: payload.group_id,
      provisioningKeyId: payload.provisioning_key_id,
      jkt: cnf.jkt,
      issuedAt: (payload.iat as number) * 1000,
      expiresAt: (payload.exp as number) * 1000,
      keyId: header.kid as string,
    };
  }

  /** The public key of a key not retired, by kid; null otherwise (a retired key's identities are invalid). */
  private verifyKeyOf(kid: string): KeyObject | null {
    for (const k of this.keys) if (k.stored.kid === kid && k.retiredAt === null) return k.verifyKey;
    return null;
  }
}

/** The key of `keys` that signs at `now`: the latest activation not in the future among keys not retired. */
function signerOf(keys: readonly HeldKey[], now: number): HeldKey | null {
  let best: HeldKey | null = null;
  for (const k of keys) {
    if (k.retiredAt !== null || k.activateAt === null || k.activateAt > now || !k.signingKey) continue;
    if (
      !best ||
      k.activateAt > best.activateAt! ||
      (k.activateAt === best.activateAt && k.createdAt >= best.createdAt)
    )
      best = k;
  }
  return best;
}

/**
 * A change whose write may or may not be durable (its answer was lost): the caller hears "it may have
 * been saved", and learns the result if the write turns out durable. The document's watch reads the
 * keys again then.
 */
function unconfirmed<T>(
  error: DocumentWriteUnconfirmed,
  keys: HeldKey[],
  result: (signer: HeldKey | null) => T,
  now: number,
): ChangeUnconfirmed {
  return new ChangeUnconfirmed(
    'The connection to the database was lost as the signing keys were saved, and what became of the change could not be learnt from the database: it may have been saved. Check with `signing-keys list` before trying again.',
    error.landed.then(
      (saved): LateOutcome =>
        saved === true ? { saved: true, result: result(signerOf(keys, now)) } : { saved },
    ),
  );
}

/** Tries of one rotation or retirement against other replicas' changes before it gives up. */
const MAX_CHANGE_ATTEMPTS = 5;
