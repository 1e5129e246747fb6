import { IDENTITY_AUDIENCE } from '../shared/protocol.js';
import { connectorIdSchema, groupIdSchema } from '../shared/schemas.js';

/** The longest identity token a server takes in connectionParams (sessionParamsSchema). */
export const MAX_IDENTITY_TOKEN_CHARS = 8192;

/** An identity a server answered or pushed that cannot be this agent's: it is not saved. */
export class UnusableIdentity extends Error {}

/** What an identity must be bound to: this connector, its group, this agent's key pair. */
export interface IdentityBinding {
  connectorId: string;
  groupId: string;
  /** The RFC 7638 thumbprint of the agent's public key (the token's `cnf.jkt`). */
  jkt: string;
  /** The issuer of the identity it replaces (a renewal comes from the same deployment). */
  issuer?: string;
  /**
   * When the identity it replaces was issued (its `iat`, s): a renewal is not an older one. Not its
   * expiry: a server whose --identity-ttl was shortened renews with identities that expire sooner.
   */
  issuedNotBefore?: number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

function part(token: string, index: number): Record<string, unknown> | null {
  try {
    const value = JSON.parse(Buffer.from(token.split('.')[index] ?? '', 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/**
 * Why `answer` (an enrollment's, a renewal's or a pushed identity) cannot be saved as this agent's
 * identity, or null when it can. The signature is not checked (the agent holds no key to check it
 * by); what is, is that the token is the server's kind and bound to this connector, its group and
 * this agent's key pair, and that the expiry said beside it is the token's own. A server that sent
 * anything else (a broken one, a replica of another deployment, or anyone who can write on a plain
 * http:// link) had it saved over the good identity: the genuine server then refused it
 * (IDENTITY_INVALID) and the agent wiped itself, or the next start found identity.json damaged.
 */
export function identityProblem(
  answer: { identityToken?: unknown; identityExpiresAt?: unknown },
  binding: IdentityBinding,
): string | null {
  const token = answer.identityToken;
  if (typeof token !== 'string' || !JWT_SHAPE.test(token)) return 'an identity token that is not a JWT';
  if (token.length > MAX_IDENTITY_TOKEN_CHARS)
    return `an identity token of ${token.length} characters (a server takes at most ${MAX_IDENTITY_TOKEN_CHARS})`;
  const header = part(token, 0);
  const payload = part(token, 1);
  if (!header || !payload) return 'an identity token that cannot be read';
  if (header.alg !== 'EdDSA' || typeof header.kid !== 'string')
    return 'an identity token not signed as the server signs them (EdDSA, with a kid)';
  if (payload.sub !== binding.connectorId)
    return `an identity of another connector (${String(payload.sub).slice(0, 64)}, not ${binding.connectorId})`;
  if (payload.group_id !== binding.groupId) return `an identity of another group (not ${binding.groupId})`;
  if ((payload.cnf as { jkt?: unknown } | undefined)?.jkt !== binding.jkt)
    return "an identity bound to another key pair than this agent's";
  const audience = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  if (!audience.includes(IDENTITY_AUDIENCE)) return 'an identity token for another audience';
  if (binding.issuer !== undefined && payload.iss !== binding.issuer)
    return `an identity issued by ${String(payload.iss).slice(0, 200)}, not by ${binding.issuer}`;
  const exp = payload.exp;
  const expiresAt =
    typeof answer.identityExpiresAt === 'string' ? Date.parse(answer.identityExpiresAt) : Number.NaN;
  if (typeof exp !== 'number' || !Number.isFinite(expiresAt) || exp * 1000 !== expiresAt)
    return 'an identity whose expiry is not the one its token holds';
  if (
    binding.issuedNotBefore !== undefined &&
    !(typeof payload.iat === 'number' && payload.iat >= binding.issuedNotBefore)
  )
    return 'a renewed identity issued before the one it would replace';
  return null;
}

/** The claims of an identity the agent holds, read without the signature (see identityProblem). */
export function claimsOf(token: string): { issuer: string | undefined; issuedAt: number | undefined } {
  const payload = part(token, 1);
  const iss = payload?.iss;
  const iat = payload?.iat;
  return {
    issuer: typeof iss === 'string' ? iss : undefined,
    issuedAt: typeof iat === 'number' ? iat : undefined,
  };
}

/** Why an enrollment's answer names no connector and group of the server's kind, or null. */
export function enrolledIdsProblem(answer: { connectorId?: unknown; groupId?: unknown }): string | null {
  if (!connectorIdSchema.safeParse(answer.connectorId).success)
    return 'a connector id that is not one (con_…)';
  if (!groupIdSchema.safeParse(answer.groupId).success) return 'a group id that is not one (grp_…)';
  return null;
}
