import type { ErrorReason } from './errors.js';

/** Prefix of provisioning keys: `cpk_<keyId>_<secret>`. */
export const PROVISIONING_KEY_PREFIX = 'cpk_';
/** Prefix of admin API keys: `cak_<keyId>_<secret>`. */
export const ADMIN_KEY_PREFIX = 'cak_';

export type KeyPrefix = typeof PROVISIONING_KEY_PREFIX | typeof ADMIN_KEY_PREFIX;

/**
 * The record id a key names (`<idPrefix>_<id part>`), or null when the key is not of the expected
 * shape. The id is not secret (it is in every audit event); only the part after it is.
 */
export function keyIdOf(key: string, prefix: KeyPrefix, idPrefix: string): string | null {
  if (!key.startsWith(prefix)) return null;
  const match = /^([a-z0-9]{12})_[A-Za-z0-9_-]{43}$/.exec(key.slice(prefix.length));
  return match ? `${idPrefix}_${match[1]}` : null;
}

/** `aud` of identity tokens and the `typ` of the session proof. */
export const IDENTITY_AUDIENCE = 'connector-session';
export const PROOF_TYPE = 'connector-proof+jwt';
/** How far a proof's `iat` may be from the server's clock. */
export const PROOF_MAX_SKEW_MS = 5 * 60_000;
/**
 * Response header of the websocket upgrade (101) carrying a nonce the server made for this one
 * connection. The proof signs it (claim `nonce`), so a proof captured on the way opens no other
 * connection, before or after a server restart.
 */
export const SESSION_NONCE_HEADER = 'connector-session-nonce';

/**
 * Response header of the websocket upgrade (101): the server's clock when it answered (epoch ms). The
 * agent signs its proof's `iat` by it, so a host whose clock is off still connects (the nonce, not the
 * time, is what makes a proof single-use) and says how far off it is and what to fix.
 */
export const SERVER_TIME_HEADER = 'connector-server-time';

/**
 * On an answer from a replica that is not ready (its database out of reach, its change feed behind):
 * why, in one line. Its reads come from its memory and may miss other replicas' changes since.
 */
export const NOT_READY_HEADER = 'x-connector-not-ready';

/** What a proof of possession is bound to, besides the identity token. */
export interface ProofBinding {
  /** The server's nonce for this connection (the upgrade's `connector-session-nonce` header). */
  nonce: string;
  /** The origin of the server the agent means to reach (`https://host:port`): claim `htu`. */
  htu: string;
}

/**
 * WebSocket close codes the server uses to end an agent's session. Codes 4000–4099 are final: the
 * agent must not reconnect. The close reason carries the UPPER_SNAKE reason.
 */
export const CLOSE_CODES = {
  /** The session was refused; the reason says why. */
  REFUSED: 4001,
  /** The connector was revoked while connected. */
  REVOKED: 4003,
  /** The connector was deleted while connected. */
  DELETED: 4004,
  /**
   * Another session with the same identity replaced this one. The reason is `SESSION_REPLACED`,
   * then ` by=<address>` of the session that replaced it (see `replacedCloseReason`).
   */
  REPLACED: 4009,
  /**
   * The identity's signing key is one this server never had (IDENTITY_UNKNOWN_SIGNER): another
   * deployment's server, or one that lost its keys. Not final: a misconfigured server must not make
   * hosts destroy identities their own deployment still accepts.
   */
  SIGNER_UNKNOWN: 4401,
  /** The socket sent no connectionParams in time; not final (a slow network may cause it). */
  HANDSHAKE_TIMEOUT: 4408,
  /** Too many attempts; retry later. Not final. */
  RATE_LIMITED: 4429,
} as const;

export function isFinalCloseCode(code: number | undefined): boolean {
  return code !== undefined && code >= 4000 && code < 4100;
}

/** The most a websocket close reason may hold (RFC 6455: a 125-byte payload less the code). */
const MAX_CLOSE_REASON_BYTES = 123;
const REPLACED_REASON = 'SESSION_REPLACED';

/**
 * The close reason of a replaced session, naming the address of the session that replaced it (left
 * out if it would not fit). Every agent release acts on the code 4009 before it reads the reason, so
 * the added words cannot make an older agent take it for an unknown reason (and wipe its identity).
 */
export function replacedCloseReason(byAddress: string): string {
  const reason = `${REPLACED_REASON} by=${byAddress}`;
  return new TextEncoder().encode(reason).length <= MAX_CLOSE_REASON_BYTES ? reason : REPLACED_REASON;
}

/** The address `replacedCloseReason` put in a close reason, or null (an older server, or none). */
export function replacingAddressOf(reason: string): string | null {
  return /^SESSION_REPLACED by=([0-9A-Za-z.:%_-]{1,100})$/.exec(reason)?.[1] ?? null;
}

/**
 * How long the server keeps a session open after its final `revoked` or `deleted` event, waiting for
 * the agent's `agent.acknowledge` (sent once it has wiped its identity): the socket closes at the
 * acknowledgement or at this bound, whichever comes first, and a revoke or delete answers `confirmed`
 * or `pending` accordingly. Well under the contract's 1 s for a live session to end.
 */
export const TERMINATION_ACK_TIMEOUT_MS = 750;

/** Reasons that end an agent for good, and the exit code each maps to (contract: 4 revoked, 5 identity gone). */
export const FINAL_SESSION_REASONS: Partial<Record<ErrorReason, 4 | 5>> = {
  CONNECTOR_REVOKED: 4,
  CONNECTOR_NOT_FOUND: 5,
  IDENTITY_EXPIRED: 5,
  IDENTITY_INVALID: 5,
};

/** Events of the `agent.session` subscription. */
export type SessionEvent =
  | {
      type: 'ready';
      connectorId: string;
      groupId: string;
      status: 'enabled' | 'disabled';
      /** `hostFactsDigest` of the host facts the server holds (null: none); the agent reports only others. */
      hostDigest: string | null;
    }
  | { type: 'status'; status: 'enabled' | 'disabled'; scope: 'connector' | 'group' }
  | { type: 'identity'; identityToken: string; identityExpiresAt: string }
  | { type: 'revoked'; reason: string | null }
  | { type: 'deleted' };
