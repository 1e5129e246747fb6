import { setRecord, withFields } from '../record-tables.js';
import type { StoreData } from '../records.js';
import type { StoreSection } from '../store.js';
import type { RecordTouch } from './commit.js';
import { recordKey } from './tracked-transaction.js';

/**
 * Touched fields not yet written, by record: the value of each field as last touched, and whether any
 * of them must reach the other replicas (`propagate`). Taken whole by a commit and given back (under
 * anything touched since) when that commit fails.
 */
export class PendingTouches {
  private touches = new Map<string, RecordTouch>();

  get size(): number {
    return this.touches.size;
  }

  note(section: StoreSection, id: string, fields: Record<string, unknown>, propagate = false): void {
    const key = recordKey(section, id);
    let touch = this.touches.get(key);
    if (!touch) {
      touch = { section, id, fields: {}, removed: [] };
      this.touches.set(key, touch);
    }
    if (propagate) touch.propagate = true;
    for (const [field, value] of Object.entries(fields)) {
      // A field set to undefined disappears from JSON: the merge removes it instead.
      if (value === undefined) {
        delete touch.fields[field];
        if (!touch.removed.includes(field)) touch.removed.push(field);
      } else {
        touch.fields[field] = value;
        touch.removed = touch.removed.filter((name) => name !== field);
      }
    }
  }

  take(): RecordTouch[] {
    const taken = [...this.touches.values()];
    this.touches = new Map();
    return taken;
  }

  /** A commit that carried `taken` failed: keep them due, under what was touched since. */
  giveBack(taken: readonly RecordTouch[]): void {
    const newer = this.touches;
    this.touches = new Map();
    for (const touch of taken) this.touches.set(recordKey(touch.section, touch.id), touch);
    for (const touch of newer.values()) this.note(touch.section, touch.id, fieldsOf(touch), touch.propagate);
  }

  /**
   * Records replaced in memory by other replicas' changes (or a reload) lost the touches not yet
   * written: merges them in again, so memory keeps what this replica was told last.
   */
  reapply(
    data: StoreData,
    replaced: ReadonlyArray<{ section: StoreSection; id: string; after: object | undefined }>,
  ): void {
    for (const { section, id, after } of replaced) {
      const touch = after && this.touches.get(recordKey(section, id));
      if (!touch) continue;
      const next = withFields(after as Record<string, unknown>, fieldsOf(touch));
      if (next) setRecord(data, section, id, next);
    }
  }
}

function fieldsOf(touch: RecordTouch): Record<string, unknown> {
  const fields: Record<string, unknown> = { ...touch.fields };
  for (const name of touch.removed) fields[name] = undefined;
  return fields;
}
