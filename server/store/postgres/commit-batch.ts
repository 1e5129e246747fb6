import type { RecordView } from '../record-tables.js';
import type { StoreSection } from '../store.js';
import type { FeedPosition } from './changes.js';
import type { CommitRequest, RecordRead, RecordTouch, RecordWrite } from './commit.js';
import type { CommittedVersions } from './committed-versions.js';
import type { TrackedTransaction } from './tracked-transaction.js';

/**
 * The one commit that carries a batch of transactions, all applied to memory in this order over the
 * committed state (`versions`, at feed `position`): what they read of the committed state (a record an
 * earlier transaction of the batch wrote is the batch's own value, not a read), each written record's
 * final value as memory holds it now (a record made and deleted within the batch is no write), and the
 * sections they listed.
 */
export function commitRequestOf(
  batch: readonly TrackedTransaction[],
  context: {
    origin: string;
    view: RecordView;
    versions: CommittedVersions;
    position: FeedPosition;
    touches: readonly RecordTouch[];
  },
): CommitRequest {
  const { view, versions } = context;
  const reads = new Map<string, RecordRead>();
  const written = new Map<string, { section: StoreSection; id: string }>();
  const scanned = new Set<StoreSection>();
  for (const tx of batch) {
    for (const [key, { section, id }] of tx.reads)
      if (!written.has(key) && !reads.has(key))
        reads.set(key, { section, id, version: versions.of(section, id) });
    for (const [key, record] of tx.writes) written.set(key, record);
    for (const section of tx.scanned) scanned.add(section);
  }
  const writes: RecordWrite[] = [];
  for (const { section, id } of written.values()) {
    const body = view.get(section, id) ?? null;
    if (body === null && versions.of(section, id) === 0) continue;
    writes.push({ section, id, body });
  }
  return {
    origin: context.origin,
    reads: [...reads.values()],
    writes,
    touches: context.touches,
    ...(scanned.size > 0 ? { scans: { sections: [...scanned], since: context.position } } : {}),
  };
}
