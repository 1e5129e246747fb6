import { DomainError } from '../../shared/errors.js';
import { deployHint } from '../shell-words.js';
import type { GroupRecord } from '../store/records.js';
import { applyNow, type StoreView } from '../store/store.js';
import type { RequestMeta, ServiceDeps } from './deps.js';
import { type AfterSaved, onceSaved, savedLate, whenSavedLate } from './once-saved.js';
import { type KeyPolicy, rotateGroupKey } from './provisioning-keys.js';
import { randomId } from './secrets.js';
import { countsByGroup, currentKeySummary, emptyCounts, type GroupView, groupView } from './views.js';

function assertNameFree(view: StoreView, name: string, exceptId?: string): void {
  const wanted = name.toLocaleLowerCase();
  for (const group of view.list('groups')) {
    if (group.id !== exceptId && group.name.toLocaleLowerCase() === wanted) {
      throw new DomainError('NAME_TAKEN', `A group named "${group.name}" already exists.`);
    }
  }
}

function requireGroup(view: StoreView, groupId: string): Readonly<GroupRecord> {
  const group = view.get('groups', groupId);
  if (!group) throw new DomainError('GROUP_NOT_FOUND');
  return group;
}

/** What GroupService is built from. */
export type GroupServiceDeps = Pick<
  ServiceDeps,
  | 'store'
  | 'audit'
  | 'clock'
  | 'events'
  | 'presence'
  | 'unsavedTerminations'
  | 'policy'
  | 'secretBox'
  | 'logger'
>;

export class GroupService {
  constructor(private readonly deps: GroupServiceDeps) {}

  async create(
    input: { name: string; description?: string | undefined; maxUses?: number; ttl?: number },
    meta: RequestMeta,
  ): Promise<GroupView> {
    const policy: KeyPolicy = { maxUses: input.maxUses, ttlMs: input.ttl };
    const now = this.deps.clock.now();
    const durable = this.deps.store.transact((tx) => {
      assertNameFree(tx, input.name);
      const record: GroupRecord = {
        id: randomId('grp'),
        name: input.name,
        description: input.description ?? '',
        status: 'enabled',
        createdAt: now,
        currentKeyId: '',
      };
      tx.put('groups', record);
      const key = rotateGroupKey(tx, this.deps, record.id, now, policy);
      return {
        ...requireGroup(tx, record.id),
        key: { maxUses: key.maxUses ?? null, ttlMs: key.expiresAt - key.createdAt },
      };
    });
    const group = await onceSaved(
      durable,
      (saved, late) =>
        this.deps.audit.record({
          type: 'group.created',
          ...meta,
          groupId: saved.id,
          keyId: saved.currentKeyId,
          details: { name: saved.name, ...saved.key, ...savedLate(late) },
        }),
      this.deps.logger,
    );
    return groupView(
      group,
      emptyCounts(),
      this.deps.store.read((view) => currentKeySummary(view, group, now)),
    );
  }

  list(): GroupView[] {
    const now = this.deps.clock.now();
    return this.deps.store.read((view) => {
      const counts = countsByGroup(view, this.deps.presence);
      return view
        .list('groups')
        .map((g) => groupView(g, counts.get(g.id) ?? emptyCounts(), currentKeySummary(view, g, now)));
    });
  }

  get(groupId: string): GroupView {
    const now = this.deps.clock.now();
    return this.deps.store.read((view) => {
      const group = requireGroup(view, groupId);
      const counts = countsByGroup(view, this.deps.presence).get(groupId) ?? emptyCounts();
      return groupView(group, counts, currentKeySummary(view, group, now));
    });
  }

  /** Groups with no connectors yet: the console's "Deploy Your Connectors" list. */
  nextSteps() {
    return this.list()
      .filter((g) => g.counts.total === 0)
      .map((g) => ({
        groupId: g.id,
        name: g.name,
        step: 'Deploy Your Connectors',
        hint: deployHint(g),
      }));
  }

  async update(
    input: { groupId: string; name?: string | undefined; description?: string | undefined },
    meta: RequestMeta,
  ): Promise<GroupView> {
    const durable = this.deps.store.transact((tx) => {
      const group = requireGroup(tx, input.groupId);
      if (input.name !== undefined) assertNameFree(tx, input.name, group.id);
      const changes: Partial<GroupRecord> = {};
      if (input.name !== undefined) changes.name = input.name;
      if (input.description !== undefined) changes.description = input.description;
      tx.patch('groups', group.id, changes);
      return { name: group.name, description: group.description };
    });
    await onceSaved(
      durable,
      (before, late) =>
        this.deps.audit.record({
          type: 'group.updated',
          ...meta,
          groupId: input.groupId,
          details: { before, name: input.name, description: input.description, ...savedLate(late) },
        }),
      this.deps.logger,
    );
    return this.get(input.groupId);
  }

  /**
   * Enables or disables a group. Asking for the status it already has changes nothing: no write, no
   * audit event, nothing pushed to its connectors; `changed` says which happened.
   */
  async setStatus(
    groupId: string,
    status: 'enabled' | 'disabled',
    meta: RequestMeta,
  ): Promise<GroupView & { changed: boolean }> {
    const already = this.deps.store.read((view) => requireGroup(view, groupId).status === status);
    if (already) return { ...this.get(groupId), changed: false };
    const durable = this.deps.store.transact((tx) => {
      requireGroup(tx, groupId);
      tx.patch('groups', groupId, { status });
      return tx
        .list('connectors')
        .filter((c) => c.groupId === groupId)
        .map((c) => c.id);
    });
    await onceSaved(
      durable,
      async (connectorIds, late) => {
        try {
          await this.deps.audit.record({
            type: status === 'enabled' ? 'group.enabled' : 'group.disabled',
            ...meta,
            groupId,
            details: savedLate(late),
          });
        } finally {
          // Saved: its agents hear of it even when its audit event could not be written yet.
          this.deps.events.saved({ type: 'group.status', groupId, status, connectorIds });
        }
      },
      this.deps.logger,
    );
    return { ...this.get(groupId), changed: true };
  }

  /**
   * Deletes the group, its keys and (with `force`) its connectors. `expectedConnectors`: the count
   * the caller confirmed; more than that now is refused, so a host that enrolled meanwhile is not
   * deleted unseen.
   */
  async delete(
    groupId: string,
    { force, expectedConnectors }: { force: boolean; expectedConnectors?: number | undefined },
    meta: RequestMeta,
  ): Promise<{ deleted: true }> {
    const { applied, durable } = applyNow(this.deps.store, (tx) => {
      const group = requireGroup(tx, groupId);
      const connectorIds = tx
        .list('connectors')
        .filter((c) => c.groupId === groupId)
        .map((c) => c.id);
      if (connectorIds.length > 0 && !force) {
        throw new DomainError('GROUP_NOT_EMPTY', `The group still has ${connectorIds.length} connector(s).`, {
          connectors: connectorIds.length,
        });
      }
      if (expectedConnectors !== undefined && connectorIds.length > expectedConnectors) {
        throw new DomainError(
          'GROUP_NOT_EMPTY',
          `The group now has ${connectorIds.length} connector(s), not the ${expectedConnectors} expected: nothing was deleted.`,
          { connectors: connectorIds.length },
        );
      }
      for (const id of connectorIds) tx.delete('connectors', id);
      for (const key of tx.list('provisioningKeys')) {
        if (key.groupId === groupId) tx.delete('provisioningKeys', key.id);
      }
      tx.delete('groups', groupId);
      return { name: group.name, connectorIds };
    });
    // End the group's sessions now (held off until saved, see UnsavedTerminations); answer once durable.
    // A group without connectors cuts nothing off: its failed write changed nothing.
    const cut =
      applied && applied.connectorIds.length > 0
        ? this.deps.unsavedTerminations.hold({
            event: 'deleted',
            connectorIds: applied.connectorIds,
            sessionsEnded: applied.connectorIds.filter((id) => this.deps.presence.holdsHere(id)).length,
            sessionsElsewhere: applied.connectorIds.filter(
              (id) => !this.deps.presence.holdsHere(id) && this.deps.presence.isConnected(id),
            ).length,
            groupName: applied.name,
            audit: {
              type: 'group.deleted',
              ...meta,
              groupId,
              details: { name: applied.name, force, connectorsRemoved: applied.connectorIds.length },
            },
          })
        : null;
    if (applied)
      this.deps.events.applied({ type: 'group.deleted', groupId, connectorIds: applied.connectorIds });
    const committed: AfterSaved<Awaited<typeof durable>> = async (removed, late) => {
      this.deps.events.committed({ type: 'group.deleted', groupId, connectorIds: removed.connectorIds });
      await this.deps.audit.record({
        type: 'group.deleted',
        ...meta,
        groupId,
        details: {
          name: removed.name,
          force,
          connectorsRemoved: removed.connectorIds.length,
          ...savedLate(late),
        },
      });
    };
    whenSavedLate(durable, committed, this.deps.logger);
    await committed(await this.deps.unsavedTerminations.settle(durable, cut), false);
    return { deleted: true };
  }
}
