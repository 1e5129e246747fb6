import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Clock } from '../clock.js';
import type { StoreData } from '../store/records.js';
import type { Store } from '../store/store.js';
import { BackupWriter, SECTIONS, type Section, type SigningKeyFileContent } from './format.js';

/** Where an online backup's parts come from: the running server's own state. */
export interface SnapshotSources {
  store: Store;
  clock: Clock;
  /** The signing keys as held now (IdentityAuthority.keyFileContent). */
  signingKeys: () => SigningKeyFileContent;
  secret: Buffer;
}

/** The state at one instant, taken in one synchronous step. */
export interface Snapshot {
  snapshotAt: number;
  secret: Buffer;
  signingKeys: SigningKeyFileContent;
  adminKey: string | null;
  sections: Array<[Section, object[]]>;
}

/**
 * Takes the server's state at this instant without serializing it: every change to the store is a
 * synchronous function over memory, so whatever one turn of the event loop reads is a state that
 * existed. Each record is copied one level deep, which suffices because records change only by
 * assignment of their own fields (that is all the store's change tracking journals: a nested
 * object changed in place would not be persisted either); nested objects are replaced, never
 * mutated. Signing-key entries are replaced whole on every change too.
 *
 * Measured at 25,000 connectors: see BENCHMARKS.md / the report (a few ms), against ~0.1–0.3 s for
 * one JSON.stringify of the whole state, which this avoids doing in one turn.
 */
export function takeSnapshot(sources: SnapshotSources, adminKey: string | null): Snapshot {
  const snapshotAt = sources.clock.now();
  const sections = sources.store.read((data: Readonly<StoreData>) =>
    SECTIONS.map((section): [Section, object[]] => [
      section,
      Object.values(data[section] as Record<string, object>).map((record) => ({ ...record })),
    ]),
  );
  // The array is copied: a rotation replaces the list, and each entry is immutable once written.
  const signingKeys = { keys: [...sources.signingKeys().keys] };
  return { snapshotAt, secret: sources.secret, signingKeys, adminKey, sections };
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
  for (const [section, list] of snapshot.sections) {
    for (let start = 0; start < list.length; start += RECORDS_PER_TURN) {
      await nextTurn();
      let part = '';
      for (const record of list.slice(start, start + RECORDS_PER_TURN)) part += w.record(section, record);
      records += Math.min(RECORDS_PER_TURN, list.length - start);
      yield part;
    }
  }
  const end = w.end();
  onEnd?.({ bytes: w.bytes, records });
  yield end.line;
}
