import { rename } from 'node:fs/promises';
import { DAY_MS } from '../../shared/durations.js';
import { DomainError } from '../../shared/errors.js';
import { ADMIN_KEY_PREFIX, keyIdOf } from '../../shared/protocol.js';
import { DurableTextFile } from '../store/durable-files.js';
import type { ApiKeyRecord } from '../store/records.js';
import type { StoreView } from '../store/store.js';
import type { RequestMeta, ServiceDeps } from './deps.js';
import { onceSaved, savedLate, unlessAuditNotWritten } from './once-saved.js';
import { keyState, provisioningKeyName } from './provisioning-keys.js';
import { generateKey, keyMatches } from './secrets.js';
import { iso } from './views.js';

export interface AdminPrincipal {
  apiKeyId: string;
  scope: 'read' | 'admin';
}

export interface ApiKeyView {
  id: string;
  name: string;
  kind: 'admin' | 'provisioning';
  scope: 'read' | 'admin' | 'enroll';
  groupId: string | null;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  /** `exhausted` only for a provisioning key that has made its `maxUses` enrollments. */
  status: 'active' | 'expired' | 'exhausted';
  /** Enrollments a provisioning key has made (null for admin keys). */
  uses: number | null;
  /** The enrollments a provisioning key allows; null: no limit (and for admin keys). */
  maxUses: number | null;
}

/** Admin-scoped keys that have not expired: the ones that can still manage the server. */
function usableAdminKeys(view: StoreView, now: number) {
  return view
    .list('apiKeys')
    .filter((k) => k.scope === 'admin' && (k.expiresAt === null || k.expiresAt > now));
}

/** What ApiKeyService is built from. */
export type ApiKeyServiceDeps = Pick<ServiceDeps, 'store' | 'audit' | 'clock' | 'logger'>;

export class ApiKeyService {
  constructor(private readonly deps: ApiKeyServiceDeps) {}

  /**
   * On a store with no admin key, makes one and writes it to `file` (mode 0600), so that the first
   * admin can get in without the key ever being printed. With `evenIfKeysExist` (serve
   * --new-admin-key), makes one whatever keys exist: the way back in for an operator who lost
   * admin.key. Returns what it did, or null.
   */
  async bootstrap(
    file: string,
    { evenIfKeysExist = false }: { evenIfKeysExist?: boolean } = {},
  ): Promise<{ keptAside: string | null; keyId: string } | null> {
    // While a usable admin key exists, an admin is in: never mint another behind their back unless
    // asked at start. With none left (all deleted with --force, or expired), a restart is the
    // documented way back in: whoever can restart the server and read its data dir owns it anyway.
    const now = this.deps.clock.now();
    const none = (view: StoreView) => usableAdminKeys(view, now).length === 0;
    if (!evenIfKeysExist && !this.deps.store.read(none)) return null;
    // Checked again in the write: of replicas starting together on an empty database, one makes it.
    const recovery = `recovery-${new Date(now).toISOString().slice(0, 19).replaceAll(':', '')}`;
    const attempt = evenIfKeysExist
      ? this.createRecord({ name: recovery, scope: 'admin' }, (tx) => {
          assertKeyNameFree(tx, recovery);
          return true;
        })
      : this.createRecord({ name: 'bootstrap', scope: 'admin' }, none);
    if (!(await attempt.made)) return null;
    const created = { ...attempt.record, key: attempt.key };
    // A key file already there holds a key this store does not accept: one deleted or expired, or
    // another deployment's (a data dir pointed at a new database). Moved aside, never overwritten.
    const keptAside = await moveAside(file, now);
    await new DurableTextFile(file).write(`${created.key}\n`);
    await this.deps.audit.record({
      type: 'api_key.bootstrapped',
      actor: { kind: 'system' },
      keyId: created.id,
      // Asked for while other keys work: a security team should know a key was minted at start.
      security: evenIfKeysExist,
      details: { name: created.name, ...(evenIfKeysExist ? { requested: '--new-admin-key' } : {}) },
    });
    return { keptAside, keyId: created.id };
  }

  /**
   * `authenticate`, once this server holds every change committed before the call, through whichever
   * replica (Store.caughtUp: a read of the change feed with PostgreSQL, nothing with the embedded
   * store). An admin call through a load balancer then sees what its previous call changed through
   * another replica: a key made there works here at once, a group made there is listed here.
   */
  async authenticateCurrent(presented: string | null): Promise<AdminPrincipal> {
    await this.deps.store.caughtUp();
    return this.authenticate(presented);
  }

  /** Resolves a bearer key to its principal, or throws ADMIN_KEY_INVALID. Constant-time on the secret. */
  authenticate(presented: string | null): AdminPrincipal {
    if (!presented)
      throw new DomainError(
        'ADMIN_KEY_INVALID',
        'An admin API key is required (Authorization: Bearer cak_…).',
      );
    const record = this.currentRecordOf(presented);
    this.deps.store.touch('apiKeys', record.id, { lastUsedAt: this.deps.clock.now() });
    return { apiKeyId: record.id, scope: record.scope };
  }

  /** Whether `presented` is a current admin key (a look: nothing is recorded of it). */
  accepts(presented: string): boolean {
    try {
      this.currentRecordOf(presented);
      return true;
    } catch {
      return false;
    }
  }

  /** The record of a current admin key, or ADMIN_KEY_INVALID. Constant-time on the secret. */
  private currentRecordOf(presented: string) {
    const id = keyIdOf(presented, ADMIN_KEY_PREFIX, 'ak');
    const record = this.deps.store.read((view) => (id ? view.get('apiKeys', id) : undefined));
    if (!record || !keyMatches(presented, record.hash)) throw new DomainError('ADMIN_KEY_INVALID');
    if (record.expiresAt !== null && this.deps.clock.now() >= record.expiresAt) {
      throw new DomainError('ADMIN_KEY_INVALID', 'The admin API key has expired.');
    }
    return record;
  }

  /**
   * Whether an admin key that authenticated earlier still does: for connections that stay open on
   * it (the console's websocket), which are closed once it is deleted or has expired.
   */
  standing(apiKeyId: string): 'active' | 'deleted' | 'expired' {
    const record = this.deps.store.read((view) => view.get('apiKeys', apiKeyId));
    if (!record) return 'deleted';
    return record.expiresAt !== null && this.deps.clock.now() >= record.expiresAt ? 'expired' : 'active';
  }

  /** Admin keys, then each group's current provisioning key, as the console's "API keys" page lists them. */
  list(): ApiKeyView[] {
    const now = this.deps.clock.now();
    return this.deps.store.read((view) => {
      const admin = view.list('apiKeys').map(
        (k): ApiKeyView => ({
          id: k.id,
          name: k.name,
          kind: 'admin',
          scope: k.scope,
          groupId: null,
          createdAt: iso(k.createdAt)!,
          expiresAt: iso(k.expiresAt),
          lastUsedAt: iso(k.lastUsedAt),
          status: k.expiresAt !== null && now >= k.expiresAt ? 'expired' : 'active',
          uses: null,
          maxUses: null,
        }),
      );
      const provisioning = view.list('groups').flatMap((group): ApiKeyView[] => {
        const key = view.get('provisioningKeys', group.currentKeyId);
        if (!key) return [];
        return [
          {
            id: key.id,
            name: provisioningKeyName(group.name),
            kind: 'provisioning',
            scope: 'enroll',
            groupId: group.id,
            createdAt: iso(key.createdAt)!,
            expiresAt: iso(key.expiresAt),
            lastUsedAt: iso(key.lastUsedAt),
            status: keyState(key, now),
            uses: key.uses ?? 0,
            maxUses: key.maxUses ?? null,
          },
        ];
      });
      return [...admin, ...provisioning];
    });
  }

  async create(
    input: { name: string; scope: 'read' | 'admin'; expiresInDays?: number | undefined },
    meta: RequestMeta,
  ): Promise<ApiKeyView & { key: string }> {
    // Two keys of one name cannot be told apart in a list or the audit log, and a double-clicked
    // Create would make a second key whose secret nobody saw.
    const { record, key, made } = this.createRecord(input, (tx) => {
      assertKeyNameFree(tx, input.name);
      return true;
    });
    // Saved late, the key's secret reached nobody; the record still exists, so it is audited.
    await onceSaved(
      made,
      (_made, late) =>
        this.deps.audit
          .record({
            type: 'api_key.created',
            ...meta,
            keyId: record.id,
            details: {
              name: input.name,
              scope: input.scope,
              expiresInDays: input.expiresInDays ?? null,
              ...savedLate(late),
            },
          })
          // The key exists: refused now, its secret would reach nobody.
          .catch(unlessAuditNotWritten),
      this.deps.logger,
    );
    const created = { ...record, key };
    return {
      id: created.id,
      key: created.key,
      name: created.name,
      kind: 'admin',
      scope: created.scope,
      groupId: null,
      createdAt: iso(created.createdAt)!,
      expiresAt: iso(created.expiresAt),
      lastUsedAt: null,
      status: 'active',
      uses: null,
      maxUses: null,
    };
  }

  /**
   * Deletes an admin API key. Without `force` it refuses the key making the call: that would lock
   * the caller out at once. (Only an admin-scoped key may delete, so the key making the call is
   * always a usable admin key: refusing it is what keeps the last one.)
   */
  async delete(id: string, options: { force: boolean }, meta: RequestMeta): Promise<{ deleted: true }> {
    const durable = this.deps.store.transact((tx) => {
      if (tx.get('provisioningKeys', id)) throw new DomainError('PROVISIONING_KEY_NOT_DELETABLE');
      if (!tx.get('apiKeys', id)) throw new DomainError('API_KEY_NOT_FOUND');
      if (!options.force && meta.actor.kind === 'admin' && meta.actor.apiKeyId === id)
        throw new DomainError('API_KEY_IN_USE');
      tx.delete('apiKeys', id);
    });
    await onceSaved(
      durable,
      (_deleted, late) =>
        this.deps.audit.record({
          type: 'api_key.deleted',
          ...meta,
          keyId: id,
          details: { force: options.force, ...savedLate(late) },
        }),
      this.deps.logger,
    );
    return { deleted: true };
  }

  /**
   * Applies a new key's record (unless `onlyIf` says no) and hands back the record, its secret and
   * the write, which answers whether the record was made once it is saved.
   */
  private createRecord(
    input: { name: string; scope: 'read' | 'admin'; expiresInDays?: number | undefined },
    onlyIf: (view: StoreView) => boolean,
  ): { record: ApiKeyRecord; key: string; made: Promise<boolean> } {
    const now = this.deps.clock.now();
    const { id, key, hash } = generateKey(ADMIN_KEY_PREFIX, 'ak');
    const record: ApiKeyRecord = {
      id,
      name: input.name,
      scope: input.scope,
      hash,
      createdAt: now,
      expiresAt: input.expiresInDays ? now + input.expiresInDays * DAY_MS : null,
      lastUsedAt: null,
    };
    const made = this.deps.store.transact((tx) => {
      if (!onlyIf(tx)) return false;
      tx.put('apiKeys', record);
      return true;
    });
    return { record, key, made };
  }
}

function assertKeyNameFree(view: StoreView, name: string): void {
  const wanted = name.toLocaleLowerCase();
  for (const key of view.list('apiKeys'))
    if (key.name.toLocaleLowerCase() === wanted)
      throw new DomainError('NAME_TAKEN', `An API key named "${key.name}" already exists.`);
}

/** Renames `file` to `<file>.replaced-<time>` if it exists; answers the new name, or null. */
async function moveAside(file: string, at: number): Promise<string | null> {
  const aside = `${file}.replaced-${new Date(at).toISOString().replaceAll(':', '-')}`;
  try {
    await rename(file, aside);
    return aside;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}
