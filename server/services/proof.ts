import { createHash, timingSafeEqual } from 'node:crypto';
import { DomainError } from '../../shared/errors.js';
import { PROOF_MAX_SKEW_MS, PROOF_TYPE } from '../../shared/protocol.js';
import { checkJwtClaims, ed25519PublicKey, ed25519Thumbprint, verifyEd25519Jws } from './jws.js';

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

/**
 * Checks a proof of possession: a JWT signed by the key the identity is bound to (its public JWK in
 * the header must have the identity's thumbprint), bound to this identity token (`ath`), to the
 * nonce the server made for this connection (`nonce`), to this server when it knows its public
 * origin (`htu`), and fresh (`iat` within the skew). The nonce lives as long as its connection's
 * handshake, so a proof seen once, on the wire or in a log, opens nothing else: no replay cache
 * to keep, and nothing for a restart to forget.
 */
export function verifyProof(
  proof: string,
  identityToken: string,
  jkt: string,
  expected: ExpectedProofBinding,
  now: number,
): void {
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
  const named = originOf(payload.htu);
  if (expected.origin !== null && named !== expected.origin)
    throw new DomainError(
      'PROOF_INVALID',
      `The proof was made for ${named ?? 'no server URL'}, not for this server's ${expected.origin} (its --public-url).`,
    );
  const issuedAtMs = (payload.iat as number) * 1000;
  if (!(Math.abs(now - issuedAtMs) <= PROOF_MAX_SKEW_MS)) throw new DomainError('PROOF_INVALID');
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
