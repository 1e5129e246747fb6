import { DomainError } from '../../shared/errors.js';
import type { HostFacts } from '../../shared/schemas.js';
import type { ConnectorRecord } from '../store/records.js';
import { applyNow, type StoreView } from '../store/store.js';
import type { AuditInput } from './audit.js';
import { type ConnectorFilter, connectorPage } from './connector-pages.js';
import { type RequestMeta, type ServiceDeps, systemMeta } from './deps.js';
import type { DomainEvent } from './events.js';
import { type AfterSaved, onceSaved, savedLate, whenSavedLate } from './once-saved.js';
import { policyOf, rotateGroupKey } from './provisioning-keys.js';
import type { CutOff, UnsavedTermination } from './unsaved-terminations.js';
import {
  addToCounts,
  type ConnectorCounts,
  type ConnectorView,
  connectorView,
  emptyCounts,
  type Termination,
} from './views.js';

/** A host learnt that its connector was revoked or deleted: when, from where, and how we know. */
export interface TerminationConfirmation {
  event: 'revoked' | 'deleted';
  groupId: string;
  at: number;
  from: string;
  /** Its agent acknowledged the session's final event, or a later handshake of its identity was refused. */
  via: 'acknowledgement' | 'handshake';
}

function requireConnector(view: StoreView, connectorId: string): Readonly<ConnectorRecord> {
  const record = view.get('connectors', connectorId);
  if (!record) throw new DomainError('CONNECTOR_NOT_FOUND');
  return record;
}

/** What ConnectorService is built from. */
export type ConnectorServiceDeps = Pick<
  ServiceDeps,
  | 'store'
  | 'audit'
  | 'clock'
  | 'events'
  | 'presence'
  | 'unsavedTerminations'
  | 'policy'
  | 'secretBox'
  | 'metrics'
  | 'logger'
>;

/** Deleted connectors whose confirmation by a handshake this process remembers (the newest kept). */
const DELETIONS_TOLD_KEPT = 10_000;

export class ConnectorService {
  /**
   * Deleted connectors whose host this process told at a handshake already: a copy of a deleted
   * identity retried in a loop wrote a `connector.deletion_confirmed` event and a confirmation every
   * replica hears, per handshake (30 a minute per replica, the connector's allowance). The first says
   * all there is to say; the refusals are still counted and audited (`session.refused`, coalesced).
   */
  private readonly deletionsToldAtHandshake = new Set<string>();

  constructor(private readonly deps: ConnectorServiceDeps) {}

  /** One page of connectors in enrollment order (see connectorPage). */
  list(filter: ConnectorFilter): { items: ConnectorView[]; nextCursor: string | null } {
    const now = this.deps.clock.now();
    return this.deps.store.read((view) => connectorPage(view, filter, this.deps.presence, now));
  }

  get(connectorId: string): ConnectorView {
    return this.deps.store.read((view) =>
      connectorView(requireConnector(view, connectorId), this.deps.presence, this.deps.clock.now()),
    );
  }

  counts(): ConnectorCounts {
    return this.deps.store.read((view) => {
      const counts = emptyCounts();
      for (const record of view.list('connectors')) addToCounts(counts, record, this.deps.presence);
      return counts;
    });
  }

  /**
   * Enables or disables a connector. Asking for the status it already has changes nothing: no
   * write, no audit event, nothing pushed to its agent; `changed` says which happened.
   */
  async setStatus(
    connectorId: string,
    status: 'enabled' | 'disabled',
    meta: RequestMeta,
  ): Promise<ConnectorView & { changed: boolean }> {
    const current = this.deps.store.read((view) => requireConnector(view, connectorId).status);
    if (current === 'revoked') throw new DomainError('CONNECTOR_REVOKED');
    if (current === status) return { ...this.get(connectorId), changed: false };
    const durable = this.deps.store.transact((tx) => {
      const record = requireConnector(tx, connectorId);
      if (record.status === 'revoked') throw new DomainError('CONNECTOR_REVOKED');
      tx.patch('connectors', connectorId, { status });
      return record.groupId;
    });
    await onceSaved(
      durable,
      async (groupId, late) => {
        try {
          await this.deps.audit.record({
            type: status === 'enabled' ? 'connector.enabled' : 'connector.disabled',
            ...meta,
            connectorId,
            groupId,
            details: savedLate(late),
          });
        } finally {
          // Saved: its agent hears of it even when its audit event could not be written yet.
          this.deps.events.saved({ type: 'connector.status', connectorId, status });
        }
      },
      this.deps.logger,
    );
    return { ...this.get(connectorId), changed: true };
  }

  /**
   * Revokes a connector for good and regenerates its group's key in the same write: whoever
   * deployed it may still hold the key, so the key is treated as exposed too. Answers once the
   * revocation is durable and its live session (if any) acknowledged it or the bound passed, with
   * `termination` saying which.
   */
  async revoke(
    connectorId: string,
    reason: string | null,
    meta: RequestMeta,
  ): Promise<ConnectorView & { changed: boolean }> {
    // Revoking twice changes nothing: no write, no new key, no audit event; `changed` says so.
    const already = this.deps.store.read((view) => requireConnector(view, connectorId).status === 'revoked');
    if (already) return { ...this.get(connectorId), changed: false };
    const now = this.deps.clock.now();
    const { applied, durable } = applyNow(this.deps.store, (tx) => {
      const record = requireConnector(tx, connectorId);
      if (record.status === 'revoked') return null;
      tx.patch('connectors', connectorId, { status: 'revoked', revokedAt: now, revokeReason: reason });
      const group = tx.get('groups', record.groupId);
      const previousKeyId = group?.currentKeyId ?? null;
      const previousKey = previousKeyId ? tx.get('provisioningKeys', previousKeyId) : undefined;
      // The successor keeps the group's policy (a single-use key stays single-use, for as long).
      const policy = previousKey ? policyOf(previousKey) : {};
      const newKey = group ? rotateGroupKey(tx, this.deps, group.id, now, policy) : null;
      return { groupId: record.groupId, previousKeyId, newKeyId: newKey?.id ?? null };
    });
    // Cut the agent off now; answer once the revocation is durable.
    const cut = applied
      ? this.cutOff(
          connectorId,
          'revoked',
          { type: 'connector.revoked', connectorId, reason },
          { type: 'connector.revoked', ...meta, connectorId, groupId: applied.groupId, details: { reason } },
        )
      : null;
    // A session on another replica confirms through the connector's record (see confirmTermination).
    const ended = this.deps.presence.termination(connectorId, applied ? durable : undefined);
    const committed: AfterSaved<Awaited<typeof durable>> = async (saved, late) => {
      if (!saved) return;
      this.deps.events.committed({ type: 'connector.revoked', connectorId, reason });
      await this.deps.audit.record({
        type: 'connector.revoked',
        ...meta,
        connectorId,
        groupId: saved.groupId,
        keyId: saved.newKeyId,
        details: { reason, previousKeyId: saved.previousKeyId, ...savedLate(late) },
      });
    };
    whenSavedLate(durable, committed, this.deps.logger);
    const outcome = await this.deps.unsavedTerminations.settle(durable, cut, ended);
    await committed(outcome, false);
    const termination = await ended;
    const view = { ...this.get(connectorId), changed: outcome !== null };
    // Pending here may still be a confirmation stored by an earlier revoke: the record says.
    return termination.state === 'confirmed' ? { ...view, termination } : view;
  }

  /** Deletes a connector; `termination` says whether its live session (if any) acknowledged it. */
  async delete(connectorId: string, meta: RequestMeta): Promise<{ deleted: true; termination: Termination }> {
    const { applied, durable } = applyNow(this.deps.store, (tx) => {
      const record = requireConnector(tx, connectorId);
      tx.delete('connectors', connectorId);
      // The record is gone after this: its event keeps the name it had, for whoever reads the log.
      return { groupId: record.groupId, name: record.name };
    });
    const cut = applied
      ? this.cutOff(
          connectorId,
          'deleted',
          { type: 'connector.deleted', connectorId },
          {
            type: 'connector.deleted',
            ...meta,
            connectorId,
            groupId: applied.groupId,
            details: { name: applied.name },
          },
        )
      : null;
    // A session on another replica confirms through the cluster's sessions (see confirmTermination).
    const ended = this.deps.presence.termination(connectorId, applied ? durable : undefined);
    const committed: AfterSaved<Awaited<typeof durable>> = async ({ groupId, name }, late) => {
      if (cut) this.deps.events.committed({ type: 'connector.deleted', connectorId });
      await this.deps.audit.record({
        type: 'connector.deleted',
        ...meta,
        connectorId,
        groupId,
        details: { name, ...savedLate(late) },
      });
    };
    whenSavedLate(durable, committed, this.deps.logger);
    await committed(await this.deps.unsavedTerminations.settle(durable, cut, ended), false);
    return { deleted: true, termination: await ended };
  }

  /** Holds the connector off until the change is saved, then ends its live session (if any). */
  private cutOff(
    connectorId: string,
    event: UnsavedTermination,
    domainEvent: DomainEvent,
    audit: AuditInput,
  ): CutOff {
    const { presence } = this.deps;
    const here = presence.holdsHere(connectorId);
    const cut = this.deps.unsavedTerminations.hold({
      event,
      connectorIds: [connectorId],
      sessionsEnded: here ? 1 : 0,
      sessionsElsewhere: !here && presence.isConnected(connectorId) ? 1 : 0,
      audit,
    });
    this.deps.events.applied(domainEvent);
    return cut;
  }

  /**
   * Records that a host learnt its connector was revoked (the first time only: a durable write,
   * which nobody waits for; a revoke made through another replica hears of it in the feed) and
   * audits it. A deleted connector has no record left to hold it: that confirmation is audited and
   * announced to the other replicas, one of which may be answering the delete.
   */
  confirmTermination(connectorId: string, c: TerminationConfirmation): void {
    const audit = (type: string, lazy: boolean) =>
      this.deps.audit.record(
        {
          type,
          actor: { kind: 'agent', connectorId },
          remoteAddress: c.from,
          connectorId,
          groupId: c.groupId,
          details: { via: c.via, confirmedAt: new Date(c.at).toISOString() },
        },
        { lazy },
      );
    const failed = (error: unknown) =>
      this.deps.logger.error({ err: error, connectorId }, 'could not record a confirmed termination');
    if (c.event === 'deleted') {
      if (c.via === 'handshake' && !this.firstToldAtHandshake(connectorId)) return;
      // A deletion told at a handshake rides along with a write.
      audit('connector.deletion_confirmed', c.via === 'handshake').catch(failed);
      this.deps.presence.deletionConfirmed(connectorId, c.at, c.from);
      return;
    }
    const unconfirmed = (record: Readonly<ConnectorRecord> | undefined) =>
      record?.status === 'revoked' && (record.revocationConfirmedAt ?? null) === null;
    // Checked before the write: a revoked host retrying its handshake costs no write once confirmed.
    if (!this.deps.store.read((view) => unconfirmed(view.get('connectors', connectorId)))) return;
    const durable = this.deps.store.transact((tx) => {
      if (!unconfirmed(tx.get('connectors', connectorId))) return false;
      tx.patch('connectors', connectorId, { revocationConfirmedAt: c.at, revocationConfirmedFrom: c.from });
      return true;
    });
    onceSaved(
      durable,
      (changed) => (changed ? audit('connector.revocation_confirmed', false) : undefined),
      this.deps.logger,
    ).catch(failed);
  }

  /** Whether this is the first handshake of the deleted `connectorId` this process refused (see deletionsToldAtHandshake). */
  private firstToldAtHandshake(connectorId: string): boolean {
    const told = this.deletionsToldAtHandshake;
    if (told.has(connectorId)) return false;
    told.add(connectorId);
    if (told.size > DELETIONS_TOLD_KEPT) told.delete(told.values().next().value as string);
    return true;
  }

  /** Removes connectors that enrolled but never opened a session within the pending TTL. */
  async sweepPending(): Promise<string[]> {
    const cutoff = this.deps.clock.now() - this.deps.policy.pendingTtlMs;
    const isStale = (r: Readonly<ConnectorRecord>) =>
      r.lastConnectedAt === null && r.enrolledAt <= cutoff && !this.deps.presence.isConnected(r.id);
    const stale = this.deps.store.read((view) => view.list('connectors').filter(isStale).length);
    if (stale === 0) return [];
    const durable = this.deps.store.transact((tx) => {
      const ids = tx
        .list('connectors')
        .filter(isStale)
        .map((r) => ({ id: r.id, groupId: r.groupId }));
      for (const { id } of ids) tx.delete('connectors', id);
      return ids;
    });
    const removed = await onceSaved(
      durable,
      async (saved, late) => {
        for (const { id } of saved) this.deps.events.saved({ type: 'connector.deleted', connectorId: id });
        // Every event handed to the audit log (one it cannot write yet is held), then the first
        // failure said: awaited one by one, a failure left the rest unrecorded.
        const recorded = await Promise.allSettled(
          saved.map(({ id, groupId }) =>
            this.deps.audit.record({
              type: 'connector.pending_expired',
              ...systemMeta,
              connectorId: id,
              groupId,
              details: { pendingTtlMs: this.deps.policy.pendingTtlMs, ...savedLate(late) },
            }),
          ),
        );
        const failed = recorded.find((r) => r.status === 'rejected');
        if (failed) throw failed.reason;
      },
      this.deps.logger,
    );
    return removed.map((r) => r.id);
  }

  /** Host facts an agent reported over its session. */
  updateHost(connectorId: string, host: HostFacts): void {
    this.deps.metrics.hostReports.inc();
    // Checked again here, not only by the caller: a revoked connector's record takes no writes.
    const record = this.deps.store.read((view) => view.get('connectors', connectorId));
    if (record && record.status !== 'revoked') this.deps.store.touch('connectors', connectorId, { host });
  }

  /**
   * Connection bookkeeping from the session hub: kept in memory, written lazily (within seconds).
   * Not durable on purpose, first connections included: a whole-file write per connect would
   * dominate the cost of a session, and a connector whose first connect was lost in a crash
   * reconnects after it (only one that never comes back is swept after the pending TTL).
   */
  recordConnection(
    connectorId: string,
    change: {
      connectedAt?: number;
      seenAt: number;
      remoteAddress?: string;
      /** This connect replaced a live session of the connector, from that address. */
      replacedFrom?: string;
    },
  ): void {
    const fields: Partial<ConnectorRecord> = {};
    if (change.connectedAt !== undefined) fields.lastConnectedAt = change.connectedAt;
    if (change.remoteAddress !== undefined) fields.remoteAddress = change.remoteAddress;
    if (change.replacedFrom !== undefined) {
      fields.lastReplacedAt = change.seenAt;
      fields.replacedFrom = change.replacedFrom;
    }
    fields.lastSeenAt = change.seenAt;
    this.deps.store.touch('connectors', connectorId, fields);
  }

  /** Stores the facts of a renewed identity. */
  recordIdentity(connectorId: string, identity: ConnectorRecord['identity']): void {
    this.deps.store.touch('connectors', connectorId, { identity });
  }
}
