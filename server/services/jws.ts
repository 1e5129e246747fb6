import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';

/**
 * The verifying half of compact JWS (RFC 7515) for the one algorithm this server accepts, EdDSA with
 * Ed25519, on node:crypto.
 *
 * Why not jose here, when jose signs everything and issues the JWKS: jose 6 verifies through
 * WebCrypto, and on this server's hot path (two verifications per agent handshake, thousands per
 * second in a reconnect storm) that cost 325 µs of CPU per verification against 153 µs for
 * node:crypto, key import included (measured on the 2-core reference machine; BENCHMARKS.md). The
 * rules below follow jose's `jwtVerify` for the options the server used with it, and
 * `test/jws.test.ts` checks that both accept and refuse the same tokens, over fuzzed mutations of
 * real ones. Stricter than jose on purpose in ways no agent meets: base64url segments with padding
 * or whitespace are refused (jose 6 on Node 20 decodes them with `atob`, which forgives both), and
 * so is any `crit` header (jose understands `b64`; nothing here uses it); identity tokens must name
 * their key (`kid`), where jose would try the only key of a one-key set.
 */

export type JsonObject = Record<string, unknown>;

export interface VerifiedJws {
  header: JsonObject;
  payload: JsonObject;
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const ED25519_SIGNATURE_BYTES = 64;
// Invalid UTF-8 is an error, not replacement characters (as jose decodes).
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeJsonObject(part: string): JsonObject | null {
  try {
    const value: unknown = JSON.parse(strictUtf8.decode(Buffer.from(part, 'base64url')));
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as JsonObject)
      : null;
  } catch {
    return null;
  }
}

/**
 * Verifies an EdDSA compact JWS with the key `keyFor` picks from its protected header, and returns
 * the header and the JSON payload; null when anything about it is wrong (shape, algorithm, critical
 * extensions, key, signature). Claims are the caller's: see `checkJwtClaims`.
 */
export function verifyEd25519Jws(
  token: string,
  keyFor: (header: JsonObject) => KeyObject | null,
): VerifiedJws | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [encodedHeader, encodedPayload, encodedSignature] = parts as [string, string, string];
  if (!BASE64URL.test(encodedHeader) || !BASE64URL.test(encodedPayload) || !BASE64URL.test(encodedSignature))
    return null;
  const header = decodeJsonObject(encodedHeader);
  if (header?.alg !== 'EdDSA') return null;
  // No extension is understood here, so any critical one makes the token unusable (RFC 7515 §4.1.11).
  if (header.crit !== undefined) return null;
  const signature = Buffer.from(encodedSignature, 'base64url');
  if (signature.length !== ED25519_SIGNATURE_BYTES) return null;
  const key = keyFor(header);
  if (!key) return null;
  const signingInput = Buffer.from(`${encodedHeader}.${encodedPayload}`, 'ascii');
  let valid = false;
  try {
    valid = verify(null, signingInput, key, signature);
  } catch {
    return null;
  }
  if (!valid) return null;
  const payload = decodeJsonObject(encodedPayload);
  return payload ? { header, payload } : null;
}

/** A public Ed25519 key from a JWK, or null if it is anything else (another curve, a private key, junk). */
export function ed25519PublicKey(jwk: unknown): KeyObject | null {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return null;
  const { kty, crv, x, d } = jwk as JsonObject;
  if (kty !== 'OKP' || crv !== 'Ed25519' || typeof x !== 'string' || d !== undefined) return null;
  try {
    return createPublicKey({ key: { kty, crv, x }, format: 'jwk' });
  } catch {
    return null;
  }
}

/**
 * RFC 7638 thumbprint of an Ed25519 public JWK, computed synchronously: jose's goes through an
 * asynchronous WebCrypto digest that cost more CPU than the signature it accompanies (~90 µs per
 * call here, ~180 µs per enrollment).
 */
export function ed25519Thumbprint(jwk: { crv: string; kty: string; x: string }): string {
  // The required members in lexicographic order, no whitespace (RFC 7638 §3.2–3.3).
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x });
  return createHash('sha256').update(canonical).digest('base64url');
}

export type ClaimsProblem = 'invalid' | 'expired';

export interface ClaimRules {
  /** Now, in milliseconds. */
  now: number;
  /** Claims that must be present. */
  required: readonly string[];
  issuer?: string;
  audience?: string;
  /** The header's `typ`, compared as media types are (case-insensitive, `application/` optional). */
  type?: string;
}

const mediaType = (value: string) => value.toLowerCase().replace(/^application\//, '');

/**
 * The JWT claim checks jose's `jwtVerify` makes for these options, in its order (so a token both
 * mistargeted and expired is "invalid", as before): typ, required claims, iss, aud, iat/nbf/exp
 * types, nbf, then exp (expired once now reaches `exp`, in whole seconds).
 */
export function checkJwtClaims(verified: VerifiedJws, rules: ClaimRules): ClaimsProblem | null {
  const { header, payload } = verified;
  if (rules.type !== undefined) {
    if (typeof header.typ !== 'string' || mediaType(header.typ) !== mediaType(rules.type)) return 'invalid';
  }
  for (const claim of rules.required) if (!Object.hasOwn(payload, claim)) return 'invalid';
  if (rules.issuer !== undefined && payload.iss !== rules.issuer) return 'invalid';
  if (rules.audience !== undefined) {
    const aud = payload.aud;
    const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
    if (!audiences.includes(rules.audience)) return 'invalid';
  }
  const nowSeconds = Math.floor(rules.now / 1000);
  for (const time of ['iat', 'nbf', 'exp'] as const) {
    if (payload[time] !== undefined && typeof payload[time] !== 'number') return 'invalid';
  }
  if (typeof payload.nbf === 'number' && payload.nbf > nowSeconds) return 'invalid';
  if (typeof payload.exp === 'number' && payload.exp <= nowSeconds) return 'expired';
  return null;
}

/** The header of a compact JWS, decoded WITHOUT checking anything: only for cheap pre-filters. */
export function unverifiedHeader(token: string): JsonObject | null {
  const parts = token.split('.');
  if (parts.length !== 3 || !BASE64URL.test(parts[0] as string)) return null;
  return decodeJsonObject(parts[0] as string);
}

/** The payload of a compact JWS, decoded WITHOUT checking anything: only for cheap pre-filters. */
export function unverifiedPayload(token: string): JsonObject | null {
  const parts = token.split('.');
  if (parts.length !== 3 || !BASE64URL.test(parts[1] as string)) return null;
  return decodeJsonObject(parts[1] as string);
}
