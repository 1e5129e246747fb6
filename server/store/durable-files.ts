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

/** A JSON document kept whole in one file: read at start-up, rewritten durably on every change. */
export class JsonDocumentFile<T> {
  private readonly file: DurableTextFile;
  constructor(
    readonly path: string,
    sync: FileSync = realSync,
  ) {
    this.file = new DurableTextFile(path, sync);
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
