import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { loadGivenSecret, loadOrCreateSecret } from '../server/data-files.js';
import { ISSUER } from '../server/server-config.js';
import { IdentityAuthority, type SigningKeyFile } from '../server/services/identity.js';
import { SecretBox } from '../server/services/secrets.js';
import { migrateToLatest } from '../server/store/postgres/migrate.js';
import { SealedDocument, SecretMismatchError } from '../server/store/postgres/sealed-document.js';
import { freshDatabase, testPool, withClient } from './helpers/postgres.js';
import { tempDir } from './helpers/server.js';

/** How long a change may take to reach another replica when its notification is delivered. */
const NOTIFIED_WITHIN_MS = 1000;
/** The version check's interval in the test of a dropped listener. */
const CHECK_INTERVAL_MS = 200;
/** Elsewhere the check waits longer than any test: what arrives came by notification. */
const NO_CHECK_MS = 600_000;

/** A migrated database and a way to start replicas' authorities on it; all closed at the end. */
async function sharedKeys() {
  const db = await freshDatabase();
  await withClient(db.url, migrateToLatest);
  const clock = new ManualClock();
  const secret = randomBytes(32);
  const pools: pg.Pool[] = [];
  const documents: SealedDocument<SigningKeyFile>[] = [];
  const authorities: IdentityAuthority[] = [];
  const document = (box = new SecretBox(secret), checkIntervalMs = NO_CHECK_MS, writeWaitMs?: number) => {
    const pool = testPool(db.url, 2);
    pools.push(pool);
    const doc = new SealedDocument<SigningKeyFile>({
      pool,
      connectionString: db.url,
      name: 'signing-keys',
      box,
      checkIntervalMs,
      ...(writeWaitMs === undefined ? {} : { writeWaitMs }),
    });
    documents.push(doc);
    return doc;
  };
  return {
    url: db.url,
    clock,
    secret,
    document,
    /** One replica's authority over the shared document. */
    async replica(box?: SecretBox) {
      const authority = await IdentityAuthority.open(document(box), { issuer: ISSUER, clock });
      authorities.push(authority);
      return authority;
    },
    async [Symbol.asyncDispose]() {
      for (const a of authorities) a.close();
      await Promise.all(documents.map((d) => d.close()));
      await Promise.all(pools.map((p) => p.end()));
      await db[Symbol.asyncDispose]();
    },
  };
}

const kids = (authority: IdentityAuthority) => authority.list().map((k) => `${k.kid}:${k.state}`);

describe('signing keys shared by replicas through the database', () => {
  it('are stored sealed: the raw row holds neither the private key nor any key id in clear', async () => {
    await using shared = await sharedKeys();
    const a = await shared.replica();
    const [key] = a.keyFileContent().keys;
    const rows = await withClient(shared.url, (c) =>
      c.query(`SELECT name, body, version FROM server_documents`),
    );
    expect(rows.rows).toHaveLength(1);
    const raw = JSON.stringify(rows.rows[0]);
    expect(key!.privateJwk.d).toBeTruthy();
    expect(raw).not.toContain(key!.privateJwk.d);
    expect(raw).not.toContain(key!.kid);
    expect(raw).not.toContain('privateJwk');
    // The same secret opens it (what a second replica does).
    const opened = JSON.parse(
      new SecretBox(shared.secret).open(rows.rows[0].body, 'server_documents/signing-keys'),
    );
    expect(opened.keys[0].privateJwk.d).toBe(key!.privateJwk.d);
  });

  it('a replica started with another secret fails with one line that says so', async () => {
    await using shared = await sharedKeys();
    await shared.replica();
    const wrong = shared.replica(new SecretBox(randomBytes(32)));
    await expect(wrong).rejects.toBeInstanceOf(SecretMismatchError);
    const message = await wrong.catch((error: Error) => error.message);
    expect(message).toContain("this replica's secret differs from the one the database was set up with");
    expect(message).not.toContain('\n');
  });

  it('replicas starting together on an empty database end up with one and the same first key', async () => {
    await using shared = await sharedKeys();
    const replicas = await Promise.all([shared.replica(), shared.replica(), shared.replica()]);
    expect(new Set(replicas.map((r) => r.activeKeyId)).size).toBe(1);
    expect(replicas.every((r) => r.list().length === 1)).toBe(true);
  });

  it("a rotation through one replica and a retirement through another reach each other within the notification's bound", async () => {
    await using shared = await sharedKeys();
    const a = await shared.replica();
    const b = await shared.replica();
    const first = a.activeKeyId;
    const before = await b.issue(
      { connectorId: 'con_1', groupId: 'grp_1', provisioningKeyId: 'pk_1', jkt: 'j' },
      60_000,
    );

    const { key } = await a.rotate(0);
    await vi.waitFor(() => expect(b.activeKeyId).toBe(key.kid), {
      timeout: NOTIFIED_WITHIN_MS,
      interval: 10,
    });
    const after = await b.issue(
      { connectorId: 'con_2', groupId: 'grp_1', provisioningKeyId: 'pk_1', jkt: 'j' },
      60_000,
    );
    expect((await a.verifyIdentity(after.token)).keyId).toBe(key.kid);

    await b.retire(first);
    await vi.waitFor(() => expect(kids(a)).toEqual(kids(b)), { timeout: NOTIFIED_WITHIN_MS, interval: 10 });
    expect(a.publicKeySet().keys.map((k) => k.kid)).toEqual([key.kid]);
    await expect(a.verifyIdentity(before.token)).rejects.toMatchObject({ reason: 'IDENTITY_INVALID' });
  });

  it("a replica whose listener connection was dropped still gets a rotation, by the version check's interval", async () => {
    await using shared = await sharedKeys();
    const a = await shared.replica();
    const bDocument = shared.document(undefined, CHECK_INTERVAL_MS);
    const b = await IdentityAuthority.open(bDocument, { issuer: ISSUER, clock: shared.clock });
    try {
      await vi.waitFor(() => expect(bDocument.listenerPid).toBeDefined(), { timeout: 2000, interval: 10 });
      await withClient(shared.url, (c) =>
        c.query(`SELECT pg_terminate_backend($1)`, [bDocument.listenerPid]),
      );
      await vi.waitFor(() => expect(bDocument.listenerPid).toBeUndefined(), { timeout: 2000, interval: 10 });
      const started = performance.now();
      const { key } = await a.rotate(0);
      await vi.waitFor(() => expect(b.activeKeyId).toBe(key.kid), {
        timeout: CHECK_INTERVAL_MS * 5,
        interval: 10,
      });
      expect(performance.now() - started).toBeLessThan(CHECK_INTERVAL_MS * 5);
      // The check also brought the listener back.
      await vi.waitFor(() => expect(bDocument.listenerPid).toBeDefined(), {
        timeout: CHECK_INTERVAL_MS * 5,
        interval: 10,
      });
    } finally {
      b.close();
    }
  });

  it('two replicas rotating at the same moment: both keys are kept (the version check makes one redo its change over the other)', async () => {
    await using shared = await sharedKeys();
    const a = await shared.replica();
    const b = await shared.replica();
    const [fromA, fromB] = await Promise.all([a.rotate(0), b.rotate(0)]);
    const fresh = await shared.replica();
    const stored = fresh.list().map((k) => k.kid);
    expect(stored).toHaveLength(3);
    expect(stored).toEqual(expect.arrayContaining([fromA.key.kid, fromB.key.kid]));
    const version = await withClient(shared.url, (c) => c.query(`SELECT version FROM server_documents`));
    expect(Number(version.rows[0].version)).toBe(3);
  });

  it('a write held up (a row lock elsewhere, a frozen database) is given up at its bound with nothing written, not waited on for ever', async () => {
    await using keys = await sharedKeys();
    await keys.replica(); // the document's first write
    const doc = keys.document(undefined, NO_CHECK_MS, 500);
    const stored = (await doc.read())!;
    const versionOf = async () =>
      withClient(keys.url, async (c) =>
        Number(
          (await c.query(`SELECT version FROM server_documents WHERE name = 'signing-keys'`)).rows[0].version,
        ),
      );
    const before = await versionOf();
    const locker = new pg.Client({ connectionString: keys.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query(`SELECT 1 FROM server_documents WHERE name = 'signing-keys' FOR UPDATE`);
      const started = performance.now();
      await expect(doc.write(stored)).rejects.toThrow(/timeout/i);
      // Its bound, not the lock's holder's pleasure (it would have waited as long as the lock stood).
      expect(performance.now() - started).toBeLessThan(5000);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    // The connection it was on went: its backend rolls the write back once the lock is free.
    expect(await versionOf()).toBe(before);
    // The next write goes through (once that backend has let go of the row).
    await expect
      .poll(
        () =>
          doc.write(stored).then(
            () => true,
            () => false,
          ),
        { timeout: 10_000 },
      )
      .toBe(true);
    expect(await versionOf()).toBe(before + 1);
  });
});

describe('the secret every replica is given', () => {
  it('is read from the given file, never created: missing or damaged is one line naming the file and the fix', async () => {
    const dir = await tempDir();
    try {
      const file = join(dir, 'secret.key');
      const missing = await loadGivenSecret(file).catch((error: Error) => error.message);
      expect(missing).toBe(
        `${file}: does not exist; copy secret.key from the data dir of a replica that starts (every replica needs the same one)`,
      );
      const created = await loadOrCreateSecret(file);
      expect(await loadGivenSecret(file)).toEqual(created);
      await writeFile(file, 'not a secret\n');
      expect(await loadGivenSecret(file).catch((error: Error) => error.message)).toMatch(/: is damaged .*$/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
