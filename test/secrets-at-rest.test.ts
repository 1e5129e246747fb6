import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { startServer } from '../server/app.js';
import { ManualClock } from '../server/clock.js';
import { defaultConfig } from '../server/server-config.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import { readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { tempDir } from './helpers/server.js';

describe('secrets at rest and in logs (behaviour 14)', () => {
  it('stores provisioning keys only hashed + encrypted, admin keys only hashed, secret files 0600, and logs none', async () => {
    const dataDir = await tempDir();
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const server = await startServer(defaultConfig({ dataDir, port: 0, logLevel: 'trace' }), {
      clock: new ManualClock(Date.now()),
      logger: pino({ level: 'trace' }, sink),
    });
    const adminKey = (await readFile(server.adminKeyFile, 'utf8')).trim();
    const admin = createAdminClient({ url: server.url, adminKey });
    const secrets: string[] = [adminKey];
    const group = await admin.groups.create.mutate({ name: 'Secret' });
    const key = await admin.provisioningKeys.get.query({ groupId: group.id });
    secrets.push(key.key!);
    const extra = await admin.apiKeys.create.mutate({ name: 'more', scope: 'admin' });
    secrets.push(extra.key);
    const enrolled = await enrollSim(server.url, key.key!);
    secrets.push(enrolled.enrolled!.identityToken, enrolled.enrolled!.keyPair.privateJwk.d);
    await enrollSim(server.url, `${key.key!.slice(0, -2)}zz`);
    const session = connectSim(server.url, enrolled.enrolled!);
    await session.waitFor('ready');
    const regenerated = await admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
    const jwks = (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as {
      keys: Array<Record<string, unknown>>;
    };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig' });
    expect(jwks.keys[0]).not.toHaveProperty('d');
    secrets.push(regenerated.key!);
    await session.close();
    await server.close();

    const store =
      (await readFile(join(dataDir, 'store.json'), 'utf8')) +
      (await readFile(join(dataDir, 'store.journal'), 'utf8'));
    const audit = await readFile(join(dataDir, 'audit.jsonl'), 'utf8');
    const logs = lines.join('');
    expect(logs.length).toBeGreaterThan(0);
    for (const secret of secrets) {
      expect(store).not.toContain(secret);
      expect(audit).not.toContain(secret);
      expect(logs).not.toContain(secret);
    }
    // The secret part of a key never appears on its own either.
    for (const secret of [adminKey, key.key!, extra.key]) {
      expect(store + audit + logs).not.toContain(secret.slice(-43));
    }
    for (const file of await readdir(dataDir)) {
      expect((await stat(join(dataDir, file))).mode & 0o777, file).toBe(0o600);
    }
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    const signing = JSON.parse(await readFile(join(dataDir, 'signing-keys.json'), 'utf8'));
    expect(signing.keys[0].privateJwk.d).toBeTypeOf('string');
  });

  it('a full scenario: no response, agent log line or server log line carries a secret it is not meant to', async () => {
    const dataDir = await tempDir();
    const serverLines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        serverLines.push(String(chunk));
        done();
      },
    });
    const server = await startServer(defaultConfig({ dataDir, port: 0, logLevel: 'trace' }), {
      clock: new ManualClock(Date.now()),
      logger: pino({ level: 'trace' }, sink),
    });
    const adminKey = (await readFile(server.adminKeyFile, 'utf8')).trim();
    // Every admin response, by procedure.
    const responses: Array<{ path: string; body: string }> = [];
    const recordingFetch: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      const body = await res.text();
      const path = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
        .pathname;
      responses.push({ path: path.replace('/trpc/', ''), body });
      return new Response(body, { status: res.status, headers: res.headers });
    };
    const admin = createAdminClient({ url: server.url, adminKey, fetch: recordingFetch });
    const group = await admin.groups.create.mutate({ name: 'Scan' });
    const key = await admin.provisioningKeys.get.query({ groupId: group.id });
    const extra = await admin.apiKeys.create.mutate({ name: 'scan', scope: 'read' });
    const stateDir = await tempDir('ce-scan-agent-');
    const agent = spawnAgent(['--server', server.url, '--key', key.key!, '--name', 'scanned'], stateDir);
    const connector = await waitConnected(admin, 'scanned');
    const identity = (await readIdentity(stateDir))!;
    await admin.connectors.get.query({ connectorId: connector.id });
    await admin.connectors.disable.mutate({ connectorId: connector.id });
    await admin.connectors.enable.mutate({ connectorId: connector.id });
    await admin.apiKeys.list.query({});
    await admin.audit.list.query({ limit: 1000 });
    await admin.groups.list.query({});
    await admin.connectors.list.query({});
    await admin.connectors.revoke.mutate({ connectorId: connector.id });
    expect((await agent.exited).code).toBe(4);
    const regenerated = await admin.provisioningKeys.get.query({ groupId: group.id });
    await server.close();

    const secrets: Record<string, { value: string; allowedIn: string[] }> = {
      adminKey: { value: adminKey, allowedIn: [] },
      readKey: { value: extra.key, allowedIn: ['apiKeys.create'] },
      provisioningKey: { value: key.key!, allowedIn: ['provisioningKeys.get'] },
      regeneratedKey: { value: regenerated.key!, allowedIn: ['provisioningKeys.get'] },
      identityToken: { value: identity.identityToken, allowedIn: [] },
      agentPrivateKey: { value: identity.privateJwk.d, allowedIn: [] },
    };
    expect(responses.length).toBeGreaterThan(10);
    for (const [name, { value, allowedIn }] of Object.entries(secrets)) {
      for (const r of responses) {
        if (!allowedIn.includes(r.path)) expect(r.body, `${name} in ${r.path}`).not.toContain(value);
      }
      expect(serverLines.join(''), `${name} in a server log line`).not.toContain(value);
      expect(agent.output(), `${name} in an agent log line`).not.toContain(value);
    }
    await rm(stateDir, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  });
});
