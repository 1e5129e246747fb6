import { readFile } from 'node:fs/promises';
import { type FileSync, realSync, writeFileDurably } from '../../shared/private-files.js';

// The server's files outside the store (the admin key, the signing keys) are written the one
// durable way (temp file, fsync, rename, fsync of the folder; mode 0600); the agent uses the same
// writer from shared/private-files.ts for its own files.

/** A file of the data dir that is written whole and durably. */
export class DurableTextFile {
  constructor(
    readonly path: string,
    private readonly sync: FileSync = realSync,
  ) {}

  /** Resolves once `text` would survive a crash or power cut. */
  write(text: string): Promise<void> {
    return writeFileDurably(this.path, text, { sync: this.sync });
  }
}

/**
 * A JSON document a service keeps whole (the signing keys): in a file of the data dir for one server,
 * or in the database for replicas (postgres/sealed-document.ts). The service needs nothing else.
 */
export interface KeptDocument<T> {
  /** Where it lives, for messages: a file's path, or what the database holds. */
  readonly location: string;
  /** The document; undefined when there is none yet. Other failures are thrown as they come. */
  read(): Promise<T | undefined>;
  /**
   * Resolves once `document` is durable. Rejects with DocumentConflict when another writer changed it
   * since this one last read or wrote it: read again, redo the change, write again; with
   * DocumentWriteUnconfirmed when it may be durable or not.
   */
  write(document: T): Promise<void>;
  /**
   * Calls `changed` when another writer may have changed the document (read it again: a spurious
   * call costs a read). Returns the function that stops it. Absent: no one else writes it.
   */
  watch?(changed: () => void): () => void;
}

/** Another writer changed the document since this one read it. */
export class DocumentConflict extends Error {
  override readonly name = 'DocumentConflict';
}

/**
 * A write whose answer was lost (the connection went as it committed) and whose outcome could not be
 * learnt in time: it may be durable. `landed` settles once it is known: true (durable), false (not),
 * 'unknown' (never learnt). Whoever holds the document reads it again when its watch says so.
 */
export class DocumentWriteUnconfirmed extends Error {
  override readonly name = 'DocumentWriteUnconfirmed';
  constructor(
    message: string,
    readonly landed: Promise<boolean | 'unknown'>,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A JSON document kept whole in one file: read at start-up, rewritten durably on every change. */
export class JsonDocumentFile<T> implements KeptDocument<T> {
  private readonly file: DurableTextFile;
  constructor(
    readonly path: string,
    sync: FileSync = realSync,
  ) {
    this.file = new DurableTextFile(path, sync);
  }

  get location(): string {
    return this.path;
  }

  /**
   * The document; undefined when the file does not exist (a file holding `null` is read as null, not
   * as missing). Other read or parse errors are thrown as they come.
   */
  async read(): Promise<T | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    return JSON.parse(text) as T;
  }

  write(document: T): Promise<void> {
    return this.file.write(JSON.stringify(document, null, 2));
  }
}
