import type { ChangeOp } from './changes.js';
import { recordKey } from './tracked-transaction.js';

/**
 * The committed version of each record this replica holds: what its commits claim to have read, and
 * what decides whether a change from the feed is newer than the record in memory.
 *
 * A record this replica deleted keeps its version as a tombstone until the feed hands back that
 * commit's own row: a change of the record from another replica that committed before the delete
 * (and was not yet read) could otherwise bring it back. Every such change is handed over no later
 * than the delete's own row (it committed first, and the feed reads in commit-consistent snapshots),
 * so the tombstone is not needed after it.
 */
export class CommittedVersions {
  private readonly present = new Map<string, number>();
  private readonly tombstones = new Map<string, number>();

  /** The version a read of the record relies on; 0 when the record does not exist. */
  of(section: string, id: string): number {
    return this.present.get(recordKey(section, id)) ?? 0;
  }

  /** Whether a change from the feed is newer than what this replica holds of its record. */
  isNewer(op: ChangeOp): boolean {
    const key = recordKey(op.section, op.id);
    return op.version > (this.present.get(key) ?? this.tombstones.get(key) ?? 0);
  }

  /** Records a committed change (this replica's own commit with `own`). */
  committed(op: ChangeOp, own: boolean): void {
    const key = recordKey(op.section, op.id);
    if (op.body !== null) {
      this.present.set(key, op.version);
      this.tombstones.delete(key);
      return;
    }
    this.present.delete(key);
    if (own) this.tombstones.set(key, op.version);
  }

  /** A propagated touch of a record this replica holds committed at `version`. */
  touched(section: string, id: string, version: number): void {
    this.present.set(recordKey(section, id), version);
  }

  /** The feed handed back this replica's own commit: its tombstones have done their job. */
  ownChangeRead(ops: readonly ChangeOp[]): void {
    for (const op of ops) {
      const key = recordKey(op.section, op.id);
      if (op.body === null && this.tombstones.get(key) === op.version) this.tombstones.delete(key);
    }
  }

  get tombstoneCount(): number {
    return this.tombstones.size;
  }
}
