import { createHash, randomBytes } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose';
import { PROOF_TYPE, type ProofBinding } from '../shared/protocol.js';

export interface AgentKeyPair {
  privateJwk: { kty: 'OKP'; crv: 'Ed25519'; x: string; d: string };
  publicJwk: { kty: 'OKP'; crv: 'Ed25519'; x: string };
}

/** A fresh Ed25519 key pair: the identity the server issues is bound to it (cnf.jkt). */
export async function generateAgentKeyPair(): Promise<AgentKeyPair> {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = (await exportJWK(privateKey)) as JWK;
  const publicJwk = { kty: 'OKP' as const, crv: 'Ed25519' as const, x: jwk.x! };
  return { privateJwk: { ...publicJwk, d: jwk.d! }, publicJwk };
}

export function thumbprintOf(publicJwk: AgentKeyPair['publicJwk']): Promise<string> {
  return calculateJwkThumbprint(publicJwk);
}

/**
 * A proof of possession for one connection: signed by the agent's private key, bound to the identity
 * token (`ath`), to the server's nonce for this connection (`nonce`) and to the server the agent
 * means to reach (`htu`), fresh (`iat`) and unique (`jti`), so neither a copied token nor a replayed
 * or relayed proof opens a session.
 */
export async function createProof(
  privateJwk: AgentKeyPair['privateJwk'],
  identityToken: string,
  binding: ProofBinding,
  /** The time it is issued at (epoch ms): the server's, as the agent knows it. */
  issuedAtMs: number = Date.now(),
): Promise<string> {
  const key = await importJWK(privateJwk, 'EdDSA');
  const { kty, crv, x } = privateJwk;
  return new SignJWT({
    ath: createHash('sha256').update(identityToken).digest('base64url'),
    nonce: binding.nonce,
    htu: binding.htu,
  })
    .setProtectedHeader({ alg: 'EdDSA', typ: PROOF_TYPE, jwk: { kty, crv, x } })
    .setIssuedAt(Math.floor(issuedAtMs / 1000))
    .setJti(randomBytes(16).toString('base64url'))
    .sign(key);
}
