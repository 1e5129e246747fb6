import { createHash, createPublicKey, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose';
import { DomainError } from '../../shared/errors.js';
import { IDENTITY_AUDIENCE, PROOF_MAX_SKEW_MS, PROOF_TYPE } from '../../shared/protocol.js';
import type { Clock } from '../clock.js';
import { writeFileDurably } from '../store/lowdb-store.js';
import { checkJwtClaims, ed25519PublicKey, ed25519Thumbprint, verifyEd25519Jws } from './jws.js';

interface StoredSigningKey {
  kid: string;
  createdAt: string;
  /** The one key that signs new identities; the others only verify identities they signed before. */
  active: boolean;
  privateJwk: JWK;
}

interface SigningKeyFile {
  keys: StoredSigningKey[];
}

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

const ALG = 'EdDSA';

/**
 * Signs and checks connector identities (EdDSA JWTs). Keys live in one file (mode 0600) that can hold
 * several: all are published in the JWKS and verify, exactly one signs, so a key can be rotated in
 * without cutting off agents holding identities signed by the old one.
 */
export class IdentityAuthority {
  /** Our public keys by kid, as node:crypto keys for `verifyEd25519Jws`. */
  private readonly verifyKeys: Map<string, KeyObject>;

  private constructor(
    private readonly signer: { kid: string; key: Awaited<ReturnType<typeof importJWK>> },
    private readonly publicJwks: JWK[],
    private readonly issuer: string,
    private readonly clock: Clock,
  ) {
    this.verifyKeys = new Map(
      publicJwks.map((jwk) => [jwk.kid as string, createPublicKey({ key: jwk, format: 'jwk' })]),
    );
  }

  /** Loads the signing keys from `file`, creating a first key when the file does not exist. */
  static async open(file: string, options: { issuer: string; clock: Clock }): Promise<IdentityAuthority> {
    let stored: SigningKeyFile;
    try {
      stored = JSON.parse(await readFile(file, 'utf8')) as SigningKeyFile;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new Error(
          `${file}: the signing key file cannot be read or parsed (${(error as Error).message})`,
        );
      }
      stored = { keys: [await newSigningKey(options.clock)] };
      await writeFileDurably(file, JSON.stringify(stored, null, 2));
    }
    const active = stored.keys.filter((k) => k.active);
    if (active.length !== 1 || !active[0]) {
      throw new Error(`${file}: exactly one signing key must be active (found ${active.length})`);
    }
    const publicJwks = stored.keys.map(({ kid, privateJwk }) => {
      const { d: _private, ...pub } = privateJwk;
      return { ...pub, kid, alg: ALG, use: 'sig' };
    });
    const key = await importJWK(active[0].privateJwk, ALG);
    return new IdentityAuthority({ kid: active[0].kid, key }, publicJwks, options.issuer, options.clock);
  }

  /** An authority with one fresh signing key that lives only in memory: for tests and throwaway servers. */
  static async inMemory(options: { issuer: string; clock: Clock }): Promise<IdentityAuthority> {
    const stored = await newSigningKey(options.clock);
    const { d: _private, ...pub } = stored.privateJwk;
    const key = await importJWK(stored.privateJwk, ALG);
    return new IdentityAuthority(
      { kid: stored.kid, key },
      [{ ...pub, kid: stored.kid, alg: ALG, use: 'sig' }],
      options.issuer,
      options.clock,
    );
  }

  /** The public keys, for `/.well-known/jwks.json`. */
  publicKeySet(): { keys: JWK[] } {
    return { keys: this.publicJwks };
  }

  get activeKeyId(): string {
    return this.signer.kid;
  }

  async issue(
    claims: Omit<IdentityClaims, 'issuedAt' | 'expiresAt' | 'keyId'>,
    lifetimeMs: number,
  ): Promise<IssuedIdentity> {
    // JWT times are whole seconds: keep the record's times equal to the token's.
    const issuedAt = Math.floor(this.clock.now() / 1000) * 1000;
    const expiresAt = Math.floor((issuedAt + lifetimeMs) / 1000) * 1000;
    const token = await new SignJWT({
      group_id: claims.groupId,
      provisioning_key_id: claims.provisioningKeyId,
      cnf: { jkt: claims.jkt },
    })
      .setProtectedHeader({ alg: ALG, kid: this.signer.kid, typ: 'JWT' })
      .setIssuer(this.issuer)
      .setSubject(claims.connectorId)
      .setAudience(IDENTITY_AUDIENCE)
      .setJti(randomBytes(16).toString('base64url'))
      .setIssuedAt(issuedAt / 1000)
      .setExpirationTime(expiresAt / 1000)
      .sign(this.signer.key);
    return { token, issuedAt, expiresAt, keyId: this.signer.kid };
  }

  /** Checks an identity token: signature by one of our keys, EdDSA only, issuer, audience, expiry. */
  async verifyIdentity(token: string): Promise<IdentityClaims> {
    const verified = verifyEd25519Jws(token, (header) =>
      typeof header.kid === 'string' ? (this.verifyKeys.get(header.kid) ?? null) : null,
    );
    if (!verified) throw new DomainError('IDENTITY_INVALID');
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

  /**
   * Checks a proof of possession: a JWT signed by the key the identity is bound to (its public JWK in
   * the header must have the identity's thumbprint), bound to this identity token (`ath`), to the
   * nonce the server made for this connection (`nonce`), to this server when it knows its public
   * origin (`htu`), and fresh (`iat` within the skew). The nonce lives as long as its connection's
   * handshake, so a proof seen once, on the wire or in a log, opens nothing else: no replay cache
   * to keep, and nothing for a restart to forget.
   */
  verifyProof(proof: string, identityToken: string, jkt: string, expected: ExpectedProofBinding): void {
    const now = this.clock.now();
    let embeddedJwk: { kty: string; crv: string; x: string } | null = null;
    const verified = verifyEd25519Jws(proof, (header) => {
      const key = ed25519PublicKey(header.jwk);
      if (key) embeddedJwk = header.jwk as { kty: string; crv: string; x: string };
      return key;
    });
    if (!verified || !embeddedJwk) throw new DomainError('PROOF_INVALID');
    if (checkJwtClaims(verified, { now, required: ['iat', 'jti', 'ath', 'nonce', 'htu'], type: PROOF_TYPE }))
      throw new DomainError('PROOF_INVALID');
    if (!sameText(ed25519Thumbprint(embeddedJwk), jkt)) throw new DomainError('PROOF_INVALID');
    const { payload } = verified;
    if (payload.ath !== createHash('sha256').update(identityToken).digest('base64url')) {
      throw new DomainError('PROOF_INVALID');
    }
    if (typeof payload.nonce !== 'string' || !sameText(payload.nonce, expected.nonce))
      throw new DomainError('PROOF_INVALID', "The proof does not sign this connection's nonce.");
    if (expected.origin !== null && originOf(payload.htu) !== expected.origin)
      throw new DomainError(
        'PROOF_INVALID',
        `The proof was made for another server than ${expected.origin}.`,
      );
    const issuedAtMs = (payload.iat as number) * 1000;
    if (!(Math.abs(now - issuedAtMs) <= PROOF_MAX_SKEW_MS)) throw new DomainError('PROOF_INVALID');
  }
}

/** What a proof must be bound to, besides the identity token. */
export interface ExpectedProofBinding {
  /** The nonce the server sent in this connection's upgrade response. */
  nonce: string;
  /** The server's public origin (`--public-url`), or null when it does not know it: `htu` is then not checked. */
  origin: string | null;
}

/** The origin (`scheme://host[:port]`) of a URL claim, ws(s) read as http(s); null if it is not one. */
export function originOf(url: unknown): string | null {
  if (typeof url !== 'string' || url.length > 2048) return null;
  try {
    const parsed = new URL(url.replace(/^ws(s?):/i, 'http$1:'));
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.origin : null;
  } catch {
    return null;
  }
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function newSigningKey(clock: Clock): Promise<StoredSigningKey> {
  const { privateKey } = await generateKeyPair(ALG, { crv: 'Ed25519', extractable: true });
  const privateJwk = await exportJWK(privateKey);
  const kid = ed25519Thumbprint({ kty: privateJwk.kty!, crv: privateJwk.crv!, x: privateJwk.x! });
  return { kid, createdAt: new Date(clock.now()).toISOString(), active: true, privateJwk };
}
