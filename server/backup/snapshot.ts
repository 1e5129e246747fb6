import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Clock } from '../clock.js';
import type { Store, StoreSnapshot } from '../store/store.js';
import { BackupWriter, type SigningKeyFileContent } from './format.js';

/** Where an online backup's parts come from: the running server's own state. */
export interface SnapshotSources {
  store: Store;
  clock: Clock;
  /** The signing keys as held now (IdentityAuthority.keyFileContent). */
  signingKeys: () => SigningKeyFileContent;
  secret: Buffer;
}

/** The state at one instant, taken in one synchronous step, readable over many turns. */
export interface Snapshot {
  snapshotAt: number;
  secret: Buffer;
  signingKeys: SigningKeyFileContent;
  adminKey: string | null;
  records: StoreSnapshot;
}

/**
 * Takes the server's state at this instant without copying or serializing it: every change to the
 * store is a synchronous function over memory, so what one turn of the event loop takes is a state
 * that existed, and the store's snapshot keeps it readable while changes go on (see
 * StoreSnapshot). The signing-key list is replaced on every change, never changed in place.
 * Release it with `records.release()` (backupChunks does when it ends or is abandoned).
 */
export function takeSnapshot(sources: SnapshotSources, adminKey: string | null): Snapshot {
  return {
    snapshotAt: sources.clock.now(),
    secret: sources.secret,
    signingKeys: { keys: [...sources.signingKeys().keys] },
    adminKey,
    records: sources.store.snapshot(),
  };
}

/** Records serialized per event-loop turn: ~1 KB each, so a turn costs a few ms at most. */
const RECORDS_PER_TURN = 500;

/**
 * The backup file's bytes for a snapshot, in chunks serialized across turns of the event loop so
 * that a large store never stalls the server; the last chunk is the end line with the checksum.
 * `onEnd` gets the checksum line's figures.
 */
export async function* backupChunks(
  snapshot: Snapshot,
  onEnd?: (summary: { bytes: number; records: number }) => void,
): AsyncGenerator<string> {
  const w = new BackupWriter();
  let chunk = w.header(snapshot.snapshotAt, 'online') + w.secret(snapshot.secret);
  chunk += w.signingKeys(snapshot.signingKeys);
  if (snapshot.adminKey !== null) chunk += w.adminKey(snapshot.adminKey);
  yield chunk;
  let records = 0;
  try {
    for (const [section, list] of snapshot.records.sections) {
      for (let start = 0; start < list.length; start += RECORDS_PER_TURN) {
        await nextTurn();
        let part = '';
        for (const record of list.slice(start, start + RECORDS_PER_TURN)) part += w.record(section, record);
        records += Math.min(RECORDS_PER_TURN, list.length - start);
        yield part;
      }
    }
  } finally {
    snapshot.records.release();
  }
  const end = w.end();
  onEnd?.({ bytes: w.bytes, records });
  yield end.line;
}
