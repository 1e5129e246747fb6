import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  EmbeddedJWK,
  exportJWK,
  generateKeyPair,
  type JWK,
  errors as joseErrors,
  jwtVerify,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { IdentityAuthority } from '../server/services/identity.js';
import { ed25519Thumbprint } from '../server/services/jws.js';
import { verifyProof } from '../server/services/proof.js';
import { IDENTITY_AUDIENCE, PROOF_MAX_SKEW_MS, PROOF_TYPE } from '../shared/protocol.js';

/*
 * The server verifies identities and proofs with node:crypto (server/services/jws.ts) instead of
 * jose, for speed. jose's `jwtVerify`, with the options the server used before, is the oracle here:
 * for fuzzed headers and claims signed with the right key, and for random corruptions of valid
 * tokens, both must reach the same verdict (accepted / invalid / expired). The deliberate
 * differences, all refusals: a `crit` header (jose understands `b64`), segments with base64 padding
 * or whitespace (jose 6 on Node 20 forgives both), and an identity without `kid` (jose tries the
 * only key of the set) are refused by the server.
 */

const ISSUER = 'connector-enrollment';
const NOW = Date.parse('2026-06-01T12:00:00Z');
const nowS = NOW / 1000;

type Verdict = 'ok' | 'invalid' | 'expired';

const b64json = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function signCompact(header: unknown, payload: unknown, privateJwk: JWK): string {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const key = createPrivateKey({ key: privateJwk as never, format: 'jwk' });
  return `${input}.${sign(null, Buffer.from(input), key).toString('base64url')}`;
}

/** Replaces one character of a token, or inserts one, at a position fast-check picks. */
const corrupt = (token: string) =>
  fc
    .tuple(
      fc.nat({ max: token.length - 1 }),
      fc.constantFrom('A', '_', '-', '.', '=', ' ', 'é', '+'),
      fc.boolean(),
    )
    .map(([at, ch, insert]) => token.slice(0, at) + ch + token.slice(insert ? at : at + 1))
    .filter((mutated) => mutated !== token);

let dir: string;
let signingJwk: JWK;
let kid: string;
let otherJwk: JWK;
let authority: IdentityAuthority;
const clock = new ManualClock(NOW);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jws-test-'));
  const make = async () =>
    exportJWK((await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })).privateKey);
  signingJwk = await make();
  otherJwk = await make();
  kid = ed25519Thumbprint(signingJwk as never);
  const file = join(dir, 'signing-keys.json');
  await writeFile(
    file,
    JSON.stringify({
      keys: [{ kid, createdAt: new Date(NOW).toISOString(), active: true, privateJwk: signingJwk }],
    }),
  );
  authority = await IdentityAuthority.open(file, { issuer: ISSUER, clock });
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** The server's verification before node:crypto (jose), reduced to its verdict. */
async function joseIdentityVerdict(token: string): Promise<Verdict> {
  try {
    const { payload, protectedHeader } = await jwtVerify(
      token,
      createLocalJWKSet(authority.publicKeySet() as never),
      {
        algorithms: ['EdDSA'],
        issuer: ISSUER,
        audience: IDENTITY_AUDIENCE,
        currentDate: new Date(clock.now()),
        requiredClaims: ['sub', 'exp', 'iat', 'jti'],
      },
    );
    const cnf = payload.cnf as { jkt?: unknown } | undefined;
    const usable =
      typeof payload.sub === 'string' &&
      typeof payload.group_id === 'string' &&
      typeof payload.provisioning_key_id === 'string' &&
      typeof cnf?.jkt === 'string' &&
      typeof protectedHeader.kid === 'string';
    return usable ? 'ok' : 'invalid';
  } catch (error) {
    return error instanceof joseErrors.JWTExpired ? 'expired' : 'invalid';
  }
}

async function serverIdentityVerdict(token: string): Promise<Verdict> {
  try {
    await authority.verifyIdentity(token);
    return 'ok';
  } catch (error) {
    const reason = (error as { reason?: string }).reason;
    if (reason === 'IDENTITY_EXPIRED') return 'expired';
    // Refused all the same; said apart only for a header naming a kid that is not ours.
    if (reason === 'IDENTITY_UNKNOWN_SIGNER') {
      const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8'));
      expect(typeof header.kid === 'string' && header.kid !== kid, token).toBe(true);
      return 'invalid';
    }
    expect(reason).toBe('IDENTITY_INVALID');
    return 'invalid';
  }
}

const junk = fc.constantFrom<unknown>(5, 'x', null, [], {}, true);

const identityHeader = fc.record(
  {
    alg: fc.constantFrom<unknown>('EdDSA', 'EdDSA', 'EdDSA', 'Ed25519', 'ES256', 'none', 5),
    kid: fc.constantFrom<unknown>('KID', 'KID', 'KID', 'other', undefined, 7),
    typ: fc.constantFrom<unknown>('JWT', undefined, 'at+jwt', 3),
    crit: fc.constantFrom<unknown>(undefined, undefined, undefined, ['b64'], ['exp'], [], 'b64'),
    b64: fc.constantFrom<unknown>(undefined, undefined, true, false),
  },
  { requiredKeys: [] },
);

const identityPayload = fc.record(
  {
    iss: fc.constantFrom<unknown>(ISSUER, ISSUER, ISSUER, 'someone-else', 1),
    aud: fc.constantFrom<unknown>(
      IDENTITY_AUDIENCE,
      IDENTITY_AUDIENCE,
      [IDENTITY_AUDIENCE, 'x'],
      ['x'],
      [5, IDENTITY_AUDIENCE],
      5,
    ),
    sub: fc.oneof(fc.constant('con_abc'), junk),
    exp: fc.constantFrom<unknown>(
      nowS + 3600,
      nowS + 3600,
      nowS + 1,
      nowS,
      nowS - 1,
      nowS + 0.5,
      '99999999999',
    ),
    iat: fc.constantFrom<unknown>(nowS - 10, nowS - 10, nowS + 10_000, 'yesterday', null),
    nbf: fc.constantFrom<unknown>(undefined, undefined, nowS - 5, nowS, nowS + 5, 'soon'),
    jti: fc.oneof(fc.constant('j1'), junk),
    group_id: fc.oneof(fc.constant('grp_1'), junk),
    provisioning_key_id: fc.oneof(fc.constant('pk_1'), junk),
    cnf: fc.constantFrom<unknown>({ jkt: 'thumb' }, { jkt: 'thumb' }, { jkt: 5 }, {}, 'thumb', null),
  },
  { requiredKeys: [] },
);

describe('identity tokens: node:crypto verification agrees with jose', () => {
  it('fuzzed headers and claims, signed by our key or another', async () => {
    await fc.assert(
      fc.asyncProperty(identityHeader, identityPayload, fc.boolean(), async (header, payload, ourKey) => {
        const h = { ...header, ...(header.kid === 'KID' ? { kid } : {}) };
        const token = signCompact(h, payload, ourKey ? signingJwk : otherJwk);
        const ours = await serverIdentityVerdict(token);
        if (h.crit !== undefined) expect(ours).toBe('invalid');
        else if (typeof h.kid !== 'string') {
          // jose picks the only key of the set for a header without kid (and the server then refused
          // the claims); the server refuses such a token before any check, so never as "expired".
          expect(ours).toBe('invalid');
          expect(await joseIdentityVerdict(token)).not.toBe('ok');
        } else expect(ours).toBe(await joseIdentityVerdict(token));
      }),
      { numRuns: 400 },
    );
  });

  it('a valid token is accepted by both, and any one-character corruption is judged alike', async () => {
    const { token } = await authority.issue(
      { connectorId: 'con_a', groupId: 'grp_a', provisioningKeyId: 'pk_a', jkt: 'thumb' },
      3_600_000,
    );
    expect(await serverIdentityVerdict(token)).toBe('ok');
    expect(await joseIdentityVerdict(token)).toBe('ok');
    await fc.assert(
      fc.asyncProperty(corrupt(token), async (mutated) => {
        const ours = await serverIdentityVerdict(mutated);
        // jose forgives padding and whitespace inside segments (atob); the server does not.
        if (/[= ]/.test(mutated)) expect(ours).toBe('invalid');
        else expect(ours).toBe(await joseIdentityVerdict(mutated));
      }),
      { numRuns: 300 },
    );
  });

  it('expiry is at exp, in whole seconds, on the injected clock', async () => {
    const { token, expiresAt } = await authority.issue(
      { connectorId: 'con_a', groupId: 'grp_a', provisioningKeyId: 'pk_a', jkt: 'thumb' },
      60_000,
    );
    try {
      clock.set(expiresAt - 1);
      expect(await serverIdentityVerdict(token)).toBe('ok');
      clock.set(expiresAt);
      expect(await serverIdentityVerdict(token)).toBe('expired');
      expect(await joseIdentityVerdict(token)).toBe('expired');
    } finally {
      clock.set(NOW);
    }
  });
});

describe('proofs of possession: node:crypto verification agrees with jose', () => {
  const identityToken = 'header.payload.signature';
  const ath = createHash('sha256').update(identityToken).digest('base64url');
  const nonce = 'connection-nonce';
  const origin = 'https://enroll.example:7420';

  /** The server's proof check before node:crypto (jose's EmbeddedJWK), reduced to a verdict. */
  async function joseProofVerdict(proof: string, jkt: string): Promise<Verdict> {
    try {
      const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, {
        algorithms: ['EdDSA'],
        typ: PROOF_TYPE,
        currentDate: new Date(clock.now()),
        requiredClaims: ['iat', 'jti', 'ath', 'nonce', 'htu'],
      });
      const jwk = protectedHeader.jwk;
      if (!jwk || (await calculateJwkThumbprint(jwk)) !== jkt) return 'invalid';
      if (payload.ath !== ath) return 'invalid';
      if (payload.nonce !== nonce) return 'invalid';
      if (typeof payload.htu !== 'string' || !URL.canParse(payload.htu)) return 'invalid';
      if (new URL(payload.htu.replace(/^wss:/, 'https:')).origin !== origin) return 'invalid';
      if (Math.abs(clock.now() - (payload.iat ?? 0) * 1000) > PROOF_MAX_SKEW_MS) return 'invalid';
      return 'ok';
    } catch {
      return 'invalid';
    }
  }

  async function serverProofVerdict(proof: string, jkt: string): Promise<Verdict> {
    try {
      verifyProof(proof, identityToken, jkt, { nonce, origin }, clock.now());
      return 'ok';
    } catch (error) {
      expect((error as { reason?: string }).reason).toBe('PROOF_INVALID');
      return 'invalid';
    }
  }

  it('fuzzed headers, embedded keys and claims', async () => {
    const agent = await exportJWK(
      (await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })).privateKey,
    );
    const publicJwk = { kty: agent.kty, crv: agent.crv, x: agent.x };
    const jkt = await calculateJwkThumbprint(publicJwk as JWK);
    const header = fc.record(
      {
        alg: fc.constantFrom<unknown>('EdDSA', 'EdDSA', 'EdDSA', 'ES256', 'none'),
        typ: fc.constantFrom<unknown>(
          PROOF_TYPE,
          PROOF_TYPE,
          `application/${PROOF_TYPE}`,
          PROOF_TYPE.toUpperCase(),
          'JWT',
          `x/${PROOF_TYPE}`,
          undefined,
          5,
        ),
        jwk: fc.constantFrom<unknown>(
          publicJwk,
          publicJwk,
          publicJwk,
          { ...publicJwk, alg: 'EdDSA', use: 'sig' },
          { ...publicJwk, d: agent.d },
          { ...publicJwk, crv: 'Ed448' },
          { ...publicJwk, kty: 'EC' },
          { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' },
          { kty: 'OKP', crv: 'Ed25519' },
          'jwk',
          undefined,
        ),
        crit: fc.constantFrom<unknown>(undefined, undefined, undefined, ['b64'], ['x']),
      },
      { requiredKeys: [] },
    );
    const payload = fc.record(
      {
        ath: fc.constantFrom<unknown>(ath, ath, ath, 'other', 5),
        iat: fc.constantFrom<unknown>(
          nowS,
          nowS,
          nowS - PROOF_MAX_SKEW_MS / 1000,
          nowS - PROOF_MAX_SKEW_MS / 1000 - 1,
          nowS + PROOF_MAX_SKEW_MS / 1000 + 1,
          'now',
        ),
        jti: fc.oneof(
          fc.string({ minLength: 1, maxLength: 8 }).map((s) => `${s}${randomBytes(4).toString('hex')}`),
          fc.constant(5),
        ),
        exp: fc.constantFrom<unknown>(undefined, undefined, nowS + 60, nowS - 60),
        nonce: fc.constantFrom<unknown>(nonce, nonce, nonce, `${nonce}x`, '', 5),
        htu: fc.constantFrom<unknown>(
          origin,
          origin,
          `${origin}/trpc`,
          'wss://enroll.example:7420/trpc',
          'https://relay.example:7420',
          'https://enroll.example',
          'not a url',
          5,
        ),
      },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(header, payload, fc.boolean(), async (h, p, agentKey) => {
        const proof = signCompact(h, p, agentKey ? agent : otherJwk);
        const ours = await serverProofVerdict(proof, jkt);
        if (h.crit !== undefined) expect(ours).toBe('invalid');
        else expect(ours).toBe(await joseProofVerdict(proof, jkt));
      }),
      { numRuns: 400 },
    );
  });
});
