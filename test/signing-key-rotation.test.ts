import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { ManualClock } from '../server/clock.js';
import { IDENTITY_AUDIENCE, type SessionEvent } from '../shared/protocol.js';
import { connectSim, type Enrolled, enrollSim, type SimSession } from './helpers/agent-sim.js';
import { serverCli } from './helpers/cli.js';
import { spawnServer } from './helpers/processes.js';
import { rawCall, realTimeClock, startTestServer, type TestServer } from './helpers/server.js';

async function setup(options: Parameters<typeof startTestServer>[0] = {}) {
  const srv = await startTestServer(options);
  const group = await srv.admin.groups.create.mutate({ name: 'Rotation' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  const enroll = async (name: string) => {
    const r = await enrollSim(srv.url, key, name);
    if (!r.enrolled) throw new Error(`enrollment refused: ${r.reason}`);
    return r.enrolled;
  };
  return { srv, enroll };
}

const kidOf = (token: string) => decodeProtectedHeader(token).kid;

async function jwks(srv: TestServer): Promise<{ body: JSONWebKeySet; cacheControl: string | null }> {
  const res = await fetch(`${srv.url}/.well-known/jwks.json`);
  return { body: (await res.json()) as JSONWebKeySet, cacheControl: res.headers.get('cache-control') };
}

async function keysByState(srv: TestServer) {
  const list = await srv.admin.signingKeys.list.query({});
  return {
    list,
    active: list.filter((k) => k.state === 'active'),
    byKid: new Map(list.map((k) => [k.kid, k])),
  };
}

/** The refusal a handshake with `enrolled` gets, or 'ready' if it is let in. */
async function handshake(srv: TestServer, enrolled: Pick<Enrolled, 'identityToken' | 'keyPair'>) {
  const sim = connectSim(srv.url, enrolled);
  try {
    const outcome = await Promise.race([
      sim.waitFor('ready').then(() => 'ready'),
      sim.waitForClose().then((c) => `${c.code} ${c.reason}`),
    ]);
    return outcome;
  } finally {
    await sim.close();
  }
}

describe('signing-key rotation', () => {
  it('moves 20 connected sessions to the new key over the spread, none dropped; retire waits for them', async () => {
    const { srv, enroll } = await setup({ clock: realTimeClock(), config: { rotationSpreadMs: 2000 } });
    await using _ = srv;
    const enrolled = await Promise.all(Array.from({ length: 20 }, (_, i) => enroll(`sim-${i}`)));
    const sims: SimSession[] = enrolled.map((e) => connectSim(srv.url, e));
    try {
      await Promise.all(sims.map((s) => s.waitFor('ready')));
      const oldKid = (await keysByState(srv)).active[0]!.kid;
      expect(enrolled.every((e) => kidOf(e.identityToken) === oldKid)).toBe(true);

      const rotated = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
      const newKid = rotated.key.kid;
      expect(newKid).not.toBe(oldKid);
      const before = await keysByState(srv);
      expect(before.byKid.get(newKid)?.state).toBe('active');
      expect(before.byKid.get(oldKid)).toMatchObject({ state: 'published', identities: 20 });

      // Refused while the 20 hold identities signed by it, with the count.
      const refused = await rawCall(srv.url, 'signingKeys.retire', { kid: oldKid }, { key: srv.adminKey });
      expect(refused).toMatchObject({ status: 412, reason: 'SIGNING_KEY_IN_USE' });
      expect(refused.error.data).toMatchObject({ identities: 20, connected: 20 });
      expect(refused.error.message).toContain('20 connector(s)');

      // During the overlap an independent verifier over the JWKS accepts identities of both keys.
      const overlap = createLocalJWKSet((await jwks(srv)).body);
      const renewedTokens = await Promise.all(
        sims.map(async (s) => {
          const event = (await s.waitFor('identity', 8000)) as Extract<SessionEvent, { type: 'identity' }>;
          return { token: event.identityToken, at: Date.now() };
        }),
      );
      for (const { token } of renewedTokens) expect(kidOf(token)).toBe(newKid);
      for (const token of [enrolled[0]!.identityToken, renewedTokens[0]!.token]) {
        const { payload } = await jwtVerify(token, overlap, { audience: IDENTITY_AUDIENCE });
        expect(payload.sub).toBeDefined();
      }
      // Spread over the window, not pushed in one burst.
      const times = renewedTokens.map((r) => r.at);
      expect(Math.max(...times) - Math.min(...times)).toBeGreaterThan(400);
      for (const s of sims) expect(s.closes).toEqual([]);

      const after = await keysByState(srv);
      expect(after.byKid.get(oldKid)?.identities).toBe(0);
      expect(after.byKid.get(newKid)?.identities).toBe(20);
      const retired = await srv.admin.signingKeys.retire.mutate({ kid: oldKid });
      expect(retired).toMatchObject({ key: { kid: oldKid, state: 'retired' }, identities: 0 });
      expect((await jwks(srv)).body.keys.map((k) => k.kid)).toEqual([newKid]);

      await Promise.all(sims.map((s) => s.close()));
      // Every agent reconnecting with its new identity is let in; an identity of the retired key is not.
      const outcomes = await Promise.all(
        enrolled.map((e, i) =>
          handshake(srv, { identityToken: renewedTokens[i]!.token, keyPair: e.keyPair }),
        ),
      );
      expect(outcomes).toEqual(enrolled.map(() => 'ready'));
      expect(await handshake(srv, enrolled[0]!)).toBe('4001 IDENTITY_INVALID');
    } finally {
      await Promise.all(sims.map((s) => s.close()));
    }
  });

  it('activates a rotation by the clock: published first, signing only after the delay', async () => {
    const { srv, enroll } = await setup({ clock: new ManualClock(Date.now()) });
    await using _ = srv;
    const oldKid = (await keysByState(srv)).active[0]!.kid;
    const rotated = await srv.admin.signingKeys.rotate.mutate({});
    expect(rotated.key.state).toBe('published');
    expect(Date.parse(rotated.key.activateAt!) - srv.clock.now()).toBe(10 * 60_000);
    // Published at once, with a cache lifetime well under the delay.
    const published = await jwks(srv);
    expect(published.body.keys.map((k) => k.kid)).toEqual([oldKid, rotated.key.kid]);
    expect(published.cacheControl).toBe('public, max-age=60');
    expect(kidOf((await enroll('before')).identityToken)).toBe(oldKid);

    srv.clock.advance(10 * 60_000);
    expect(kidOf((await enroll('after')).identityToken)).toBe(rotated.key.kid);
    const { byKid } = await keysByState(srv);
    expect(byKid.get(rotated.key.kid)).toMatchObject({ state: 'active', identities: 1 });
    expect(byKid.get(oldKid)).toMatchObject({ state: 'published', identities: 1 });
  });

  it('renews a session that connects after the activation with an identity of the old key', async () => {
    const { srv, enroll } = await setup({ clock: realTimeClock(), config: { rotationSpreadMs: 1000 } });
    await using _ = srv;
    const holder = await enroll('late');
    const rotated = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 1 });
    expect(rotated.key.state).toBe('published');
    await new Promise((resolve) =>
      setTimeout(resolve, Date.parse(rotated.key.activateAt!) - Date.now() + 50),
    );
    expect((await keysByState(srv)).active[0]?.kid).toBe(rotated.key.kid);
    const sim = connectSim(srv.url, holder);
    try {
      const event = (await sim.waitFor('identity', 5000)) as Extract<SessionEvent, { type: 'identity' }>;
      expect(kidOf(event.identityToken)).toBe(rotated.key.kid);
      expect(sim.closes).toEqual([]);
    } finally {
      await sim.close();
    }
  });

  it('a key retired with --force while sessions hold identities it signed: they are renewed at once, not within the spread', async () => {
    // A spread of an hour: only a renewal at once gets the identity here within seconds.
    const { srv, enroll } = await setup({ clock: realTimeClock(), config: { rotationSpreadMs: 3_600_000 } });
    await using _ = srv;
    const holder = await enroll('held');
    const oldKid = kidOf(holder.identityToken);
    const sim = connectSim(srv.url, holder);
    try {
      await sim.waitFor('ready');
      const rotated = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
      const retired = await srv.admin.signingKeys.retire.mutate({ kid: oldKid!, force: true });
      expect(retired).toMatchObject({ identities: 1, connected: 1 });
      const event = (await sim.waitFor('identity', 5000)) as Extract<SessionEvent, { type: 'identity' }>;
      expect(kidOf(event.identityToken)).toBe(rotated.key.kid);
      // The renewed identity opens a session after a reconnect; the old one is refused.
      expect(await handshake(srv, { ...holder, identityToken: event.identityToken })).toBe('ready');
      expect(await handshake(srv, holder)).toMatch(/IDENTITY_INVALID|IDENTITY_UNKNOWN_SIGNER/);
    } finally {
      await sim.close();
    }
  });

  it('keeps states and activation times across a restart, and retired keys stay out', async () => {
    const { srv } = await setup({ clock: new ManualClock(Date.now()) });
    const { dataDir, clock } = srv;
    const oldKid = (await keysByState(srv)).active[0]!.kid;
    const first = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    await srv.admin.signingKeys.retire.mutate({ kid: oldKid });
    const pending = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 3600 });
    await srv.stop();

    const file = JSON.parse(await readFile(join(dataDir, 'signing-keys.json'), 'utf8'));
    const retiredOnDisk = file.keys.find((k: { kid: string }) => k.kid === oldKid);
    expect(retiredOnDisk.retiredAt).not.toBeNull();
    expect(retiredOnDisk.privateJwk.d).toBeUndefined();

    await using again = await startTestServer({ dataDir, clock });
    const { byKid } = await keysByState(again);
    expect(byKid.get(oldKid)?.state).toBe('retired');
    expect(byKid.get(first.key.kid)?.state).toBe('active');
    expect(byKid.get(pending.key.kid)).toMatchObject({
      state: 'published',
      activateAt: pending.key.activateAt,
    });
    expect((await jwks(again)).body.keys.map((k) => k.kid)).toEqual([first.key.kid, pending.key.kid]);
    clock.advance(3600_000);
    expect((await keysByState(again)).byKid.get(pending.key.kid)?.state).toBe('active');
  });

  it('reads a key file from before rotation (one key marked active)', async () => {
    const { srv } = await setup();
    const { dataDir, clock } = srv;
    const kid = (await keysByState(srv)).active[0]!.kid;
    await srv.stop();
    const file = join(dataDir, 'signing-keys.json');
    const stored = JSON.parse(await readFile(file, 'utf8'));
    const legacy = stored.keys.map((k: { kid: string; createdAt: string; privateJwk: unknown }) => ({
      kid: k.kid,
      createdAt: k.createdAt,
      active: true,
      privateJwk: k.privateJwk,
    }));
    await writeFile(file, JSON.stringify({ keys: legacy }));
    await using again = await startTestServer({ dataDir, clock });
    expect((await keysByState(again)).active.map((k) => k.kid)).toEqual([kid]);
  });

  it('refuses to retire the active key or an unknown one; --force retires a key in use and says how many', async () => {
    const { srv, enroll } = await setup();
    await using _ = srv;
    const oldKid = (await keysByState(srv)).active[0]!.kid;
    const holder = await enroll('holder');
    const active = await rawCall(
      srv.url,
      'signingKeys.retire',
      { kid: oldKid, force: true },
      { key: srv.adminKey },
    );
    expect(active).toMatchObject({ status: 412, reason: 'SIGNING_KEY_ACTIVE' });
    const unknown = await rawCall(srv.url, 'signingKeys.retire', { kid: 'nope' }, { key: srv.adminKey });
    expect(unknown).toMatchObject({ status: 404, reason: 'SIGNING_KEY_NOT_FOUND' });

    await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    const forced = await srv.admin.signingKeys.retire.mutate({ kid: oldKid, force: true });
    expect(forced).toMatchObject({ identities: 1, connected: 0, key: { state: 'retired' } });
    expect(await handshake(srv, holder)).toBe('4001 IDENTITY_INVALID');
    const audit = await srv.admin.audit.list.query({ type: 'signing_key.retired' });
    expect(audit[0]).toMatchObject({
      keyId: oldKid,
      security: true,
      details: { force: true, identities: 1 },
    });
  });

  it('after --force, a revoked host offline at the time is still told CONNECTOR_REVOKED (its agent exits 4), by the proof of its enrolled key; a stranger with its token is not', async () => {
    const { srv, enroll } = await setup();
    await using _ = srv;
    const oldKid = (await keysByState(srv)).active[0]!.kid;
    const revoked = await enroll('revoked-offline');
    const kept = await enroll('kept-offline');
    await srv.admin.connectors.revoke.mutate({ connectorId: revoked.connectorId });
    await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    await srv.admin.signingKeys.retire.mutate({ kid: oldKid, force: true });

    // Its token alone, with a proof of another key pair: nothing proven, the identity is invalid.
    const stranger = await generateAgentKeyPair();
    expect(await handshake(srv, { ...revoked, keyPair: stranger })).toBe('4001 IDENTITY_INVALID');
    expect(await handshake(srv, revoked)).toBe('4001 CONNECTOR_REVOKED');
    // A connector not revoked holding an identity of the retired key must enroll again, as before.
    expect(await handshake(srv, kept)).toBe('4001 IDENTITY_INVALID');
    expect(await srv.admin.connectors.get.query({ connectorId: revoked.connectorId })).toMatchObject({
      status: 'revoked',
      termination: { state: 'confirmed', confirmedFrom: '127.0.0.1' },
    });
  });

  it('needs an admin-scope key to rotate or retire', async () => {
    const { srv } = await setup();
    await using _ = srv;
    const reader = await srv.admin.apiKeys.create.mutate({ name: 'reader', scope: 'read' });
    expect((await rawCall(srv.url, 'signingKeys.list', {}, { key: reader.key })).ok).toBe(true);
    const rotate = await rawCall(srv.url, 'signingKeys.rotate', {}, { key: reader.key });
    expect(rotate.reason).toBe('SCOPE_FORBIDDEN');
    expect((await rawCall(srv.url, 'signingKeys.list', {})).reason).toBe('ADMIN_KEY_INVALID');
  });
});

/** The real server CLI, as `npm run -s server -- ARGS` runs it. */
const cli = (args: string[]) => serverCli(args, { CONNECTOR_ADMIN_KEY: '' });

describe('signing-keys CLI (real server process)', () => {
  it('lists, rotates, refuses to retire a key in use with the count, and retires it with --force', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'ce-rotate-cli-'));
    const server = await spawnServer(dataDir);
    try {
      const common = ['--server', server.url, '--data-dir', dataDir];
      const listed = await cli(['signing-keys', 'list', '--json', ...common]);
      expect(listed.code, listed.stderr).toBe(0);
      const [original] = JSON.parse(listed.stdout) as Array<{ kid: string; state: string }>;
      expect(original).toMatchObject({ state: 'active', algorithm: 'EdDSA', identities: 0 });

      const group = await rawCall(server.url, 'groups.create', { name: 'Cli' }, { key: server.adminKey });
      const key = await rawCall(
        server.url,
        'provisioningKeys.get',
        { groupId: group.data.id },
        { key: server.adminKey },
      );
      expect((await enrollSim(server.url, key.data.key)).ok).toBe(true);

      const later = await cli(['signing-keys', 'rotate', ...common]);
      expect(later.code, later.stderr).toBe(0);
      expect(later.stdout).toMatch(/state:\s+published/);
      const now = await cli(['signing-keys', 'rotate', '--activate-in', '0s', '--json', ...common]);
      expect(now.code, now.stderr).toBe(0);
      const rotated = JSON.parse(now.stdout) as { key: { kid: string; state: string }; cancelled: string[] };
      expect(rotated.key.state).toBe('active');
      expect(rotated.cancelled).toHaveLength(1);

      const table = await cli(['signing-keys', 'list', ...common]);
      expect(table.stdout).toMatch(/KID\s+│?\s*ALGORITHM\s+│?\s*STATE/);
      expect(table.stdout).toContain(original!.kid);

      const refused = await cli(['signing-keys', 'retire', original!.kid, ...common]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('SIGNING_KEY_IN_USE');
      expect(refused.stderr).toContain('1 connector(s)');
      expect(refused.stderr).toContain('fix:');
      const active = await cli(['signing-keys', 'retire', rotated.key.kid, '--force', ...common]);
      expect(active.stderr).toContain('SIGNING_KEY_ACTIVE');

      const forced = await cli(['signing-keys', 'retire', original!.kid, '--force', ...common]);
      expect(forced.code, forced.stderr).toBe(0);
      expect(forced.stdout).toContain('1 must enroll again');
      const jwksAfter = (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
      expect(jwksAfter.keys.map((k) => k.kid)).not.toContain(original!.kid);
    } finally {
      server.kill('SIGTERM');
      await server.exited;
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
