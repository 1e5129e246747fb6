import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readAuditEventsOf } from '../server/backup/audit-events.js';
import { decodeBackup, encodeBackup } from '../server/backup/format.js';
import type { ServerConfig } from '../server/server-config.js';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { SecretBox } from '../server/services/secrets.js';
import { connectSim, type Enrolled, enrollSim } from './helpers/agent-sim.js';
import { readIdentity, spawnAgent, waitConnected } from './helpers/agents.js';
import { serverCli } from './helpers/cli.js';
import { freshDatabase } from './helpers/postgres.js';
import { startReplicas } from './helpers/replicas.js';
import { realTimeClock, startTestServer, tempDir } from './helpers/server.js';

/** The server CLI as an operator runs it. */
const cli = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  serverCli(args, { CONNECTOR_ADMIN_KEY: '', ...env });

const loadLimits = {
  ...DEFAULT_RATE_LIMITS,
  enrollPerAddressPerMinute: 100_000,
  enrollFailuresPerAddress: 100_000,
};

describe('backup and restore', () => {
  it('backs up a server under load (enrollments and revokes in flight) as one instant; the restore replays later revocations and its agents reconnect without enrolling again', async () => {
    const work = await tempDir('ce-backup-');
    const srv = await startTestServer({ clock: realTimeClock(), config: { rateLimits: loadLimits } });
    const agentDir = join(work, 'agent');
    let realAgent: ReturnType<typeof spawnAgent> | null = null;
    try {
      const [revoking, enrolling, home] = await Promise.all(
        ['Revoking', 'Enrolling', 'Home'].map((name) => srv.admin.groups.create.mutate({ name })),
      );
      const keyOf = async (groupId: string) => (await srv.admin.provisioningKeys.get.query({ groupId })).key!;
      realAgent = spawnAgent(
        ['--server', srv.url, '--key', await keyOf(home!.id), '--name', 'survivor'],
        agentDir,
      );
      const before = await waitConnected(srv.admin, 'survivor');

      // Enough records that the backup is written over many turns of the event loop.
      const enrollingKey = await keyOf(enrolling!.id);
      let revokingKey = await keyOf(revoking!.id);
      const toRevoke: string[] = [];
      for (let batch = 0; batch < 30; batch++) {
        const results = await Promise.all(
          Array.from({ length: 20 }, () => enrollSim(srv.url, batch % 2 ? enrollingKey : revokingKey)),
        );
        for (const r of results) {
          expect(r.ok, r.reason).toBe(true);
          if (r.enrolled!.groupId === revoking!.id) toRevoke.push(r.enrolled!.connectorId);
        }
      }

      let stop = false;
      const load = [
        (async () => {
          for (let i = 0; i < 5000 && !stop; i++) {
            const r = await enrollSim(srv.url, enrollingKey);
            expect(r.ok, r.reason).toBe(true);
          }
        })(),
        (async () => {
          for (let i = 0; i < 5000 && !stop && toRevoke.length > 0; i++) {
            await srv.admin.connectors.revoke.mutate({ connectorId: toRevoke.shift()! });
          }
        })(),
      ];
      const out = join(work, 'backup.jsonl');
      const backup = await cli(['backup', '--out', out, '--server', srv.url], {
        CONNECTOR_ADMIN_KEY: srv.adminKey,
      });
      // Changes after the backup, for certain: the restore must not bring these back.
      const revokedAfter = toRevoke.splice(0, 5);
      stop = true;
      await Promise.all(load);
      for (const connectorId of revokedAfter) await srv.admin.connectors.revoke.mutate({ connectorId });
      revokingKey = await keyOf(revoking!.id);

      expect(backup.code, backup.stderr).toBe(0);
      const bytes = await readFile(out);
      expect(backup.stdout.trim()).toBe(`${createHash('sha256').update(bytes).digest('hex')}  ${out}`);
      expect((await stat(out)).mode & 0o777).toBe(0o600);
      const snapshot = decodeBackup(bytes, out);
      await srv.stop();

      // One instant: every change audited before the snapshot is in it, none of its records is
      // from after it, and it holds no connector whose group or key is missing.
      const { events } = await readAuditEventsOf(join(srv.dataDir, 'audit.jsonl'));
      const at = (e: { at: string }) => Date.parse(e.at);
      const enrolledEvents = events.filter((e) => e.type === 'enrollment.succeeded');
      const revokedEvents = events.filter((e) => e.type === 'connector.revoked');
      const connectors = snapshot.store.connectors;
      expect(enrolledEvents.some((e) => at(e) > snapshot.snapshotAt)).toBe(true);
      for (const e of enrolledEvents) {
        if (at(e) < snapshot.snapshotAt) expect(connectors[e.connectorId!], e.connectorId!).toBeDefined();
      }
      for (const e of revokedEvents) {
        if (at(e) < snapshot.snapshotAt) expect(connectors[e.connectorId!]?.status).toBe('revoked');
      }
      const enrolledIds = new Set(enrolledEvents.map((e) => e.connectorId));
      for (const c of Object.values(connectors)) {
        expect(enrolledIds.has(c.id)).toBe(true);
        expect(c.enrolledAt).toBeLessThanOrEqual(snapshot.snapshotAt);
        expect(snapshot.store.groups[c.groupId]).toBeDefined();
        if (c.status === 'revoked') expect(c.revokedAt).toBeLessThanOrEqual(snapshot.snapshotAt);
      }
      for (const g of Object.values(snapshot.store.groups))
        expect(snapshot.store.provisioningKeys[g.currentKeyId]).toBeDefined();
      const revokedLater = revokedEvents.filter((e) => connectors[e.connectorId!]?.status !== 'revoked');
      expect(revokedLater.length).toBeGreaterThanOrEqual(revokedAfter.length);

      // Restored over the same dir: its audit log is read first and replayed.
      const refused = await cli(['restore', '--from', out, '--data-dir', srv.dataDir]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/is not empty.*--force/);
      const restored = await cli(['restore', '--from', out, '--data-dir', srv.dataDir, '--force']);
      expect(restored.code, restored.stderr).toBe(0);
      expect(restored.stdout).toContain(`${revokedLater.length} connector(s) revoked`);

      await using again = await startTestServer({
        dataDir: srv.dataDir,
        clock: realTimeClock(),
        config: { port: srv.server.port, rateLimits: loadLimits },
      });
      for (const e of revokedLater)
        expect((await again.admin.connectors.get.query({ connectorId: e.connectorId! })).status).toBe(
          'revoked',
        );
      expect((await again.admin.connectors.counts.query({})).total).toBe(Object.keys(connectors).length);
      // The key current at the snapshot was replaced by a revoke since: it enrolls no one again.
      const keyAtSnapshot =
        snapshot.store.provisioningKeys[snapshot.store.groups[revoking!.id]!.currentKeyId]!;
      const oldKey = new SecretBox(snapshot.secret).open(keyAtSnapshot.encrypted, keyAtSnapshot.id);
      expect((await enrollSim(again.url, oldKey)).reason).toBe('KEY_SUPERSEDED');
      expect((await enrollSim(again.url, revokingKey)).reason).toBe('KEY_INVALID');

      const after = await waitConnected(again.admin, 'survivor', 30_000);
      expect(after.id).toBe(before.id);
      expect((await readIdentity(agentDir))?.connectorId).toBe(before.id);
      expect((await again.admin.provisioningKeys.get.query({ groupId: home!.id })).enrollments).toBe(1);
      realAgent.kill('SIGTERM');
      await realAgent.exited;
      realAgent = null;
    } finally {
      realAgent?.kill('SIGKILL');
      await srv.stop();
      await rm(srv.dataDir, { recursive: true, force: true });
      await rm(work, { recursive: true, force: true });
    }
  }, 180_000);

  it('refuses what it cannot do safely: an offline backup while a server runs, a read-scope key, a torn or altered file', async () => {
    const work = await tempDir('ce-backup-');
    await using srv = await startTestServer();
    const kept = await srv.admin.groups.create.mutate({ name: 'Kept' });
    const keptKey = (await srv.admin.provisioningKeys.get.query({ groupId: kept.id })).key!;
    await enrollSim(srv.url, keptKey, 'kept-host');
    const out = join(work, 'b.jsonl');

    const offlineWhileRunning = await cli(['backup', '--out', out, '--data-dir', srv.dataDir]);
    expect(offlineWhileRunning.code).toBe(2);
    expect(offlineWhileRunning.stderr.trim().split('\n')).toHaveLength(1);
    expect(offlineWhileRunning.stderr).toContain(`DATA_DIR_LOCKED: data dir ${srv.dataDir}`);
    expect(offlineWhileRunning.stderr).toContain(`pid ${process.pid}`);
    expect(offlineWhileRunning.stderr).toContain('backup --out FILE --server URL');
    expect(existsSync(out)).toBe(false);
    // An --out in a folder that is not there: one line with the fix, online and offline alike.
    const nowhere = join(work, 'not-made', 'b.jsonl');
    for (const args of [
      ['--server', srv.url],
      ['--data-dir', srv.dataDir],
    ]) {
      const missing = await cli(['backup', '--out', nowhere, ...args], { CONNECTOR_ADMIN_KEY: srv.adminKey });
      expect(missing.code).toBe(2);
      expect(missing.stderr.trim()).toBe(
        `error: --out: the folder ${join(work, 'not-made')} does not exist: create it first (mkdir -p ${join(work, 'not-made')})`,
      );
      // "-" is not standard output here: refused, and no file named "-" is left in the working dir.
      const dash = await cli(['backup', '--out', '-', ...args], { CONNECTOR_ADMIN_KEY: srv.adminKey });
      expect(dash.code).toBe(2);
      expect(dash.stderr).toContain('--out -: a backup is written to a file, never to standard output');
      expect(existsSync('-')).toBe(false);
    }
    // A server that takes the request and never answers: said at --timeout, nothing written.
    const held = new Set<Socket>();
    const silent = createServer((socket) => {
      held.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const silentUrl = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
      const frozen = await cli(['backup', '--out', out, '--server', silentUrl, '--timeout', '2'], {
        CONNECTOR_ADMIN_KEY: srv.adminKey,
      });
      expect(frozen.code).toBe(1);
      expect(frozen.stderr.trim()).toBe(
        `error: the server at ${silentUrl} did not answer within 2 s (--timeout): it may be stalled or waiting on its storage; see its /healthz and its log (a stopped server is backed up with --data-dir)`,
      );
      expect(existsSync(out)).toBe(false);
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
    // Both, as an admin command takes them: --server asks the running server, --data-dir finds
    // its admin.key (no key in the environment).
    const both = await cli(['backup', '--out', out, '--server', srv.url, '--data-dir', srv.dataDir], {
      CONNECTOR_ADMIN_KEY: '',
    });
    expect(both.code, both.stderr).toBe(0);
    expect(existsSync(out)).toBe(true);
    await rm(out);

    const reader = await srv.admin.apiKeys.create.mutate({ name: 'reader', scope: 'read' });
    const readOnly = await cli(['backup', '--out', out, '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: reader.key,
    });
    expect(readOnly.code).toBe(1);
    expect(readOnly.stderr).toContain('SCOPE_FORBIDDEN');
    expect((await srv.admin.audit.list.query({ type: 'admin.refused' }))[0]?.reason).toBe('SCOPE_FORBIDDEN');

    const online = await cli(['backup', '--out', out, '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: srv.adminKey,
    });
    expect(online.code, online.stderr).toBe(0);
    expect((await srv.admin.audit.list.query({ type: 'backup.created' })).length).toBe(2); // and the one with both
    await srv.stop();

    // Offline, of the stopped server: the same state.
    const offlineOut = join(work, 'offline.jsonl');
    const offline = await cli(['backup', '--out', offlineOut, '--data-dir', srv.dataDir]);
    expect(offline.code, offline.stderr).toBe(0);
    const a = decodeBackup(await readFile(out), out);
    const b = decodeBackup(await readFile(offlineOut), offlineOut);
    expect(b.store.groups).toEqual(a.store.groups);
    expect(b.signingKeys).toEqual(a.signingKeys);
    expect(b.secret).toEqual(a.secret);

    const good = await readFile(out);
    // Crafted, then sealed with a checksum of their own (it says nothing of who wrote the file).
    const crafted = decodeBackup(good, out);
    const someConnector = Object.values(crafted.store.connectors)[0]!;
    const someGroup = Object.values(crafted.store.groups)[0]!;
    const badConnector = encodeBackup({
      ...crafted,
      store: {
        ...crafted.store,
        connectors: {
          ...crafted.store.connectors,
          [someConnector.id]: { ...someConnector, status: 'zzz' as 'enabled' },
        },
      },
    });
    const keylessGroup = encodeBackup({
      ...crafted,
      store: {
        ...crafted.store,
        groups: { ...crafted.store.groups, [someGroup.id]: { ...someGroup, currentKeyId: 'kid_gone' } },
      },
    });
    const octKey = encodeBackup({
      ...crafted,
      signingKeys: {
        ...crafted.signingKeys,
        keys: (crafted.signingKeys.keys as Array<{ privateJwk: object }>).map((k) => ({
          ...k,
          privateJwk: { ...k.privateJwk, kty: 'oct' },
        })),
      },
    });
    const lines = good.toString().split('\n').slice(0, -2);
    lines.splice(3, 0, '{not json');
    const body = `${lines.join('\n')}\n`;
    const notJson = `${body}${JSON.stringify({ kind: 'end', records: Object.values(crafted.store).reduce((n, section) => n + (typeof section === 'object' ? Object.keys(section).length : 0), 0), sha256: createHash('sha256').update(body).digest('hex') })}\n`;
    const cases: Array<[string, Buffer, RegExp]> = [
      [
        'crafted-record',
        Buffer.from(badConnector),
        new RegExp(
          `holds a record this server cannot use: connectors record "${someConnector.id}": status: `,
        ),
      ],
      [
        'keyless-group',
        Buffer.from(keylessGroup),
        new RegExp(`groups record "${someGroup.id}": its current key kid_gone is not in the file`),
      ],
      ['not-json', Buffer.from(notJson), /line 4 is not JSON/],
      ['damaged-signing-key', Buffer.from(octKey), /holds a damaged signing key \(.*\); use another backup/],
      ['torn', good.subarray(0, good.length - 40), /incomplete \(torn or truncated/],
      ['altered', flipByte(good, Math.floor(good.length / 2)), /does not match its checksum/],
      ['foreign', Buffer.from('{"hello":1}\n'), /is not a connector-server-backup file/],
      [
        'newer',
        Buffer.from(good.toString().replace('"version":1', '"version":2')),
        /version 2; this server reads version 1/,
      ],
    ];
    for (const [name, bytes, message] of cases) {
      const file = join(work, `${name}.jsonl`);
      await writeFile(file, bytes);
      const target = join(work, `target-${name}`);
      const r = await cli(['restore', '--from', file, '--data-dir', target]);
      expect(r.code, name).toBe(1);
      expect(r.stderr.trim().split('\n'), name).toHaveLength(1);
      expect(r.stderr, name).toMatch(message);
      expect(existsSync(target), name).toBe(false);
    }
    // A --from that is not there: one line naming it, the fix (check the path, or make one); nothing made.
    const absent = join(work, 'no-such.backup');
    const absentTarget = join(work, 'target-absent');
    const noFile = await cli(['restore', '--from', absent, '--data-dir', absentTarget]);
    expect(noFile.code).toBe(1);
    expect(noFile.stderr.trim().split('\n')).toHaveLength(1);
    expect(noFile.stderr).toContain(`--from ${absent} does not exist`);
    expect(noFile.stderr).toContain('backup --out FILE');
    expect(existsSync(absentTarget)).toBe(false);

    // A fresh dir from the offline backup serves the same groups, with the same admin key.
    const fresh = join(work, 'fresh');
    const restored = await cli(['restore', '--from', offlineOut, '--data-dir', fresh]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toContain('nothing replayed');
    for (const name of ['store.json', 'signing-keys.json', 'secret.key', 'admin.key'])
      expect((await stat(join(fresh, name))).mode & 0o777, name).toBe(0o600);
    await using moved = await startTestServer({ dataDir: fresh });
    expect(moved.adminKey).toBe(srv.adminKey);
    expect((await moved.admin.groups.list.query({})).map((g) => g.name)).toEqual(['Kept']);
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  it('a backup is audited before its first byte: a caller that hangs up after the secrets (the first chunk) is still on record', async () => {
    await using srv = await startTestServer();
    for (let i = 0; i < 3; i++) await srv.admin.groups.create.mutate({ name: `Taken ${i}` });
    const firstChunk = await new Promise<string>((resolve, reject) => {
      const req = request(
        `${srv.url}/admin/backup`,
        { headers: { authorization: `Bearer ${srv.adminKey}` } },
        (res) => {
          res.once('data', (chunk: Buffer) => {
            req.destroy();
            resolve(chunk.toString('utf8'));
          });
        },
      );
      req.on('error', (error) => (error.message.includes('aborted') ? undefined : reject(error)));
      req.end();
    });
    expect(firstChunk).toContain('"secret"');
    const events = await srv.admin.audit.list.query({ type: 'backup.created' });
    expect(events).toHaveLength(1);
    // The bootstrap key, three groups and their keys.
    expect(events[0]).toMatchObject({ details: { records: 7 } });
  });

  it('an audit log rotated past the backup: the restore warns that what was revoked between them is back; a --audit-file that is not there is refused', async () => {
    const { work, srv, stolen, out } = await revokedAfterBackup('ce-audit-gap-', {
      auditMaxBytes: 4096,
      auditKeep: 1,
    });
    // Enough events to rotate the revoke out of the one kept file.
    for (let i = 0; i < 40; i++) {
      await srv.clock.advance(10);
      await srv.admin.groups.create.mutate({ name: `filler-${i}` });
    }
    await srv.stop();
    const { events } = await readAuditEventsOf(join(srv.dataDir, 'audit.jsonl'));
    expect(events.map((e) => e.type)).not.toContain('connector.revoked');

    const target = join(work, 'restored');
    const missing = await restoreWith(out, target, join(srv.dataDir, 'audit.jsonl.typo'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('audit.jsonl.typo does not exist');
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    // Refused before anything is touched: no data dir made, no server.lock left in it.
    expect(existsSync(target)).toBe(false);

    const restored = await restoreWith(out, target, join(srv.dataDir, 'audit.jsonl'));
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stderr).toMatch(
      /warning: the audit log starts at \S+, after the backup's snapshot at \S+: revocations and deletions made between the two are not in it/,
    );
    await using moved = await startTestServer({ dataDir: target });
    // What the warning means: the revoked connector is enabled again.
    expect((await moved.admin.connectors.get.query({ connectorId: stolen.connectorId })).status).toBe(
      'enabled',
    );
    const audited = (await moved.admin.audit.list.query({ type: 'backup.restored' }))[0]!;
    expect(audited.details.auditGapFrom).toEqual(expect.any(String));
    await rm(srv.dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  it('a restore records what it replayed: the same backup restored again with the restored dir’s audit log keeps the revoke', async () => {
    const { work, srv, stolen, out } = await revokedAfterBackup('ce-replay-twice-');
    await srv.stop();

    const first = join(work, 'first');
    const once = await restoreWith(out, first, join(srv.dataDir, 'audit.jsonl'));
    expect(once.stdout).toContain('1 connector(s) revoked');
    const { events } = await readAuditEventsOf(join(first, 'audit.jsonl'));
    expect(events.find((e) => e.type === 'connector.revoked')).toMatchObject({
      connectorId: stolen.connectorId,
      details: { replayedFrom: { id: expect.stringMatching(/^evt_/) } },
    });
    // The first server's log is gone (another machine); the restored dir's log is what is left.
    const second = join(work, 'second');
    const twice = await restoreWith(out, second, join(first, 'audit.jsonl'));
    expect(twice.code, twice.stderr).toBe(0);
    expect(twice.stdout).toContain('1 connector(s) revoked');
    // Its log begins at the first restore, which recorded back to the snapshot: no gap to warn of.
    expect(twice.stderr).not.toContain('warning');
    await using moved = await startTestServer({ dataDir: second });
    expect((await moved.admin.connectors.get.query({ connectorId: stolen.connectorId })).status).toBe(
      'revoked',
    );
    await rm(srv.dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  it('a signing key rotated in after the backup: restored over its own dir it is kept and its identities work; restored elsewhere the restore names it and warns its identities will be refused', async () => {
    const work = await tempDir('ce-restore-rotated-');
    // A real clock: the server renews identities on its own schedule.
    const srv = await startTestServer({ clock: realTimeClock() });
    const group = await srv.admin.groups.create.mutate({ name: 'Rotated' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = (await enrollSim(srv.url, key, 'renewed-since')).enrolled!;
    const sim = connectSim(srv.url, enrolled);
    await sim.waitFor('ready');
    const out = join(work, 'before-rotation.backup');
    const backup = await cli(['backup', '--out', out, '--server', srv.url], {
      CONNECTOR_ADMIN_KEY: srv.adminKey,
    });
    expect(backup.code, backup.stderr).toBe(0);
    const oldKid = (await srv.admin.signingKeys.list.query({})).find((k) => k.state === 'active')!.kid;
    const rotated = await srv.admin.signingKeys.rotate.mutate({ activateInSeconds: 0 });
    await srv.admin.signingKeys.retire.mutate({ kid: oldKid, force: true });
    // Renewed at once with the key the backup does not have: what its agent holds from now on.
    const renewed = (await sim.waitFor('identity', 5000)) as { identityToken: string };
    const late = { ...enrolled, identityToken: renewed.identityToken };
    await sim.close();
    await srv.stop();

    const elsewhere = join(work, 'elsewhere');
    const away = await restoreWith(out, elsewhere, join(srv.dataDir, 'audit.jsonl'));
    expect(away.code, away.stderr).toBe(0);
    expect(away.stderr).toContain(`warning: signing key(s) ${rotated.key.kid} were made after the backup`);
    expect(away.stderr).toContain('IDENTITY_UNKNOWN_SIGNER');
    {
      await using moved = await startTestServer({ dataDir: elsewhere });
      expect(await handshakeOutcome(moved.url, late)).toBe('4401 IDENTITY_UNKNOWN_SIGNER');
    }

    // Another deployment's dir (its own secret): its keys must never be trusted by this one.
    const other = await startTestServer();
    await other.stop();
    const foreign = await cli([
      'restore',
      '--from',
      out,
      '--data-dir',
      other.dataDir,
      '--force',
      '--audit-file',
      join(srv.dataDir, 'audit.jsonl'),
    ]);
    expect(foreign.code, foreign.stderr).toBe(0);
    expect(foreign.stdout).not.toContain('Kept');
    expect(foreign.stderr).toContain(`warning: signing key(s) ${rotated.key.kid} were made after the backup`);
    await rm(other.dataDir, { recursive: true, force: true });

    const home = await cli(['restore', '--from', out, '--data-dir', srv.dataDir, '--force']);
    expect(home.code, home.stderr).toBe(0);
    expect(home.stdout).toContain(`Kept 1 signing key(s) made after the backup`);
    expect(home.stderr).not.toContain('warning');
    await using back = await startTestServer({ dataDir: srv.dataDir });
    expect(await handshakeOutcome(back.url, late)).toBe('ready');
    // The retirement replayed from the log still holds: the old key is not trusted again.
    const keys = await back.admin.signingKeys.list.query({});
    expect(keys.find((k) => k.kid === oldKid)?.state).toBe('retired');
    expect(keys.find((k) => k.kid === rotated.key.kid)?.state).toBe('active');
    const restored = (await back.admin.audit.list.query({ type: 'backup.restored' }))[0]!;
    expect(restored.details.signingKeysKept).toEqual([rotated.key.kid]);
    await rm(srv.dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }, 120_000);

  it('refuses to back up a --database-url deployment, online or from its data dir, pointing at pg_dump', async () => {
    const work = await tempDir('ce-backup-');
    await using db = await freshDatabase();
    const [replica] = await startReplicas(db.url, 1);
    try {
      const out = join(work, 'b.jsonl');
      const online = await cli(['backup', '--out', out, '--server', replica!.url], {
        CONNECTOR_ADMIN_KEY: replica!.adminKey,
      });
      expect(online.code).toBe(1);
      expect(online.stderr).toMatch(/^error: BACKUP_UNSUPPORTED: This server keeps its state in PostgreSQL/);
      expect(online.stderr).toContain('fix: Use `pg_dump` for the database');
      expect(existsSync(out)).toBe(false);
      await replica!.stop();
      const offline = await cli(['backup', '--out', out, '--data-dir', replica!.dataDir]);
      expect(offline.code).toBe(1);
      expect(offline.stderr.trim().split('\n')).toHaveLength(1);
      expect(offline.stderr).toContain("is a replica's: its state is in the PostgreSQL database at");
      expect(offline.stderr).toContain('back that up with pg_dump');
      expect(existsSync(out)).toBe(false);
    } finally {
      await replica![Symbol.asyncDispose]();
      await rm(work, { recursive: true, force: true });
    }
  });
});

/** 'ready' if a session of `enrolled` is let in, else its close code and reason. */
async function handshakeOutcome(url: string, enrolled: Enrolled): Promise<string> {
  const sim = connectSim(url, enrolled);
  try {
    return await Promise.race([
      sim.waitFor('ready').then(() => 'ready'),
      sim.waitForClose().then((c) => `${c.code} ${c.reason}`),
    ]);
  } finally {
    await sim.close();
  }
}

/** `restore --from backup --data-dir dir --audit-file auditFile`, as an operator runs it. */
const restoreWith = (backup: string, dir: string, auditFile: string) =>
  cli(['restore', '--from', backup, '--data-dir', dir, '--audit-file', auditFile]);

/** A server backed up online with one enrolled connector, which is then revoked (a second later). */
async function revokedAfterBackup(prefix: string, config: Partial<ServerConfig> = {}) {
  const work = await tempDir(prefix);
  const srv = await startTestServer({ config });
  const group = await srv.admin.groups.create.mutate({ name: 'Backed up' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  const stolen = (await enrollSim(srv.url, key, 'stolen')).enrolled!;
  const out = join(work, 'before.backup');
  const backup = await cli(['backup', '--out', out, '--server', srv.url], {
    CONNECTOR_ADMIN_KEY: srv.adminKey,
  });
  expect(backup.code, backup.stderr).toBe(0);
  await srv.clock.advance(1000);
  await srv.admin.connectors.revoke.mutate({ connectorId: stolen.connectorId });
  return { work, srv, stolen, out };
}

function flipByte(bytes: Buffer, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = copy[index]! ^ 0x01;
  return copy;
}
