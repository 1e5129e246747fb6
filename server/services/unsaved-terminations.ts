import { DomainError } from '../../shared/errors.js';
import { ChangeUnconfirmed } from '../store/store.js';
import type { AuditInput, AuditLog } from './audit.js';
import type { Termination } from './views.js';

/** A revoke or delete cut connectors off live; their change is not (yet) known to be on disk. */
export type UnsavedTermination = 'revoked' | 'deleted';

/** What a revoke or delete cut off before its write. */
export interface CutOff {
  event: UnsavedTermination;
  connectorIds: string[];
  /** How many of them had a live session here, which the cut ended (their agents were told). */
  sessionsEnded: number;
  /** How many had a live session on another replica, which hears of the change only once it is saved. */
  sessionsElsewhere?: number;
  /** Set for a group deletion: its name, for the answer. */
  groupName?: string;
  /** The event the change would have been audited as: a failed write records it refused, so the cut leaves a trace. */
  audit: AuditInput;
}

/**
 * Connectors a revoke or delete cut off before its write (security first: the agent is told at
 * once), held off until that write lands, and for good if it fails, until a retry saves it or the
 * server restarts: the store then returns the records to what the disk says, but the agents were
 * already told and must not be let back in by that. In memory only, by design: the disk is what
 * failed.
 */
export class UnsavedTerminations {
  /** Each held connector, by the cut that holds it. */
  private readonly held = new Map<string, CutOff>();

  constructor(private readonly audit: Pick<AuditLog, 'record'>) {}

  /** Whether sessions of this connector are refused for a revoke or delete not saved (yet). */
  of(connectorId: string): UnsavedTermination | undefined {
    return this.held.size === 0 ? undefined : this.held.get(connectorId)?.event;
  }

  /** Holds the connectors off from now: call it before their sessions are told. */
  hold(cut: CutOff): CutOff {
    for (const id of cut.connectorIds) this.held.set(id, cut);
    return cut;
  }

  /** The change that cut these connectors off is saved: their records refuse them from now on. */
  private release(cut: CutOff): void {
    // Only this cut's hold: a later revoke or delete of the same connector may hold it since.
    for (const id of cut.connectorIds) if (this.held.get(id) === cut) this.held.delete(id);
  }

  /**
   * Waits for the write of a change that cut connectors off. Saved: the hold is lifted (the records
   * refuse on their own now). Not saved: the hold stays and the answer says what did happen — a
   * plain STORE_UNAVAILABLE ("nothing was changed") would be false, since agents were told and may
   * have wiped themselves. `termination` is the ended session's receipt, for a single connector.
   */
  async settle<T>(durable: Promise<T>, cut: CutOff | null, termination?: Promise<Termination>): Promise<T> {
    try {
      const result = await durable;
      if (cut) this.release(cut);
      return result;
    } catch (error) {
      if (!cut || !(error instanceof DomainError) || error.reason !== 'STORE_UNAVAILABLE') throw error;
      // Saved after this answer: the records refuse on their own then, as after a timely save.
      if (error instanceof ChangeUnconfirmed)
        void error.landed.then((outcome) => outcome.saved === true && this.release(cut));
      const mayBeSaved = error.details.mayBeSaved === true;
      const answer = notSaved(cut, termination ? await termination : null, mayBeSaved);
      // Agents were told and may have wiped themselves: that must be in the log even though the
      // change is not. On the same full disk this event is held and written once space returns.
      await this.audit
        .record({
          ...cut.audit,
          outcome: 'refused',
          reason: answer.reason,
          security: true,
          details: {
            ...cut.audit.details,
            sessionsEnded: cut.sessionsEnded,
            connectorsCutOff: cut.connectorIds.length,
            ...(mayBeSaved ? { mayBeSaved } : {}),
          },
        })
        .catch(() => {});
      throw answer;
    }
  }
}

/**
 * The answer to a revoke or delete that cut connectors off but was not saved, or not confirmed
 * (`mayBeSaved`: the database did not answer in time, or the connection dropped as it committed):
 * what happened, what did not, what to do.
 */
function notSaved(cut: CutOff, termination: Termination | null, mayBeSaved: boolean): DomainError {
  const revoke = cut.event === 'revoked';
  const whose = cut.connectorIds.length === 1 ? 'its' : 'their';
  const retry = `This server refuses ${whose} sessions until a retry succeeds; after a restart it would not: retry the ${revoke ? 'revoke' : 'delete'}.`;
  const elsewhere = cut.sessionsElsewhere ?? 0;
  const details = {
    sessionsEnded: cut.sessionsEnded,
    ...(elsewhere > 0 ? { sessionsElsewhere: elsewhere } : {}),
    ...(mayBeSaved ? { mayBeSaved } : {}),
    ...(termination ? { termination } : {}),
  };
  // Sessions on other replicas are told by the committed change itself: not (yet), here.
  const notToldElsewhere =
    elsewhere > 0
      ? ` ${elsewhere === 1 && cut.groupName === undefined ? 'Its live session is' : `${elsewhere} live session(s) are`} on another server, which hears of it only once it is saved.`
      : '';
  if (cut.groupName !== undefined) {
    const here = elsewhere > 0 ? ' on this server' : '';
    const told =
      cut.sessionsEnded > 0
        ? `The group's ${cut.sessionsEnded} live session(s)${here} were ended and their agents told they are deleted, but`
        : `No session of the group was live${here};`;
    const what = mayBeSaved
      ? `the database has not confirmed the deletion: it may still be saved (groups get says whether the group is gone).`
      : `the deletion could not be saved: the group, its key and its ${cut.connectorIds.length} connector(s) are still there.`;
    return new DomainError('DELETE_NOT_SAVED', `${told} ${what}${notToldElsewhere} ${retry}`, details);
  }
  const told =
    cut.sessionsEnded > 0
      ? `Its live session was ended and its agent told it is ${cut.event}${
          termination?.state === 'confirmed' ? ' (the agent confirmed it and wiped its identity)' : ''
        }, but`
      : elsewhere > 0
        ? 'It had no live session on this server;'
        : 'It had no live session;';
  const record = mayBeSaved
    ? `the database has not confirmed the ${revoke ? 'revocation' : 'deletion'}: it may still be saved (connectors get says whether it was)`
    : revoke
      ? 'the revocation could not be saved: the record still reads not revoked and the group key was not regenerated'
      : 'the deletion could not be saved: the record is still there';
  return new DomainError(
    revoke ? 'REVOKE_NOT_SAVED' : 'DELETE_NOT_SAVED',
    `${told} ${record}.${notToldElsewhere} ${retry}`,
    details,
  );
}
