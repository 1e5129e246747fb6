import { basename } from 'node:path';
import { type FileSync, realSync } from '../../shared/private-files.js';

/**
 * The real fsync calls, noted in order as they complete (`synced <file>`, `synced folder`), with
 * anything the test notes between them (`note`): a write that resolves before its sync shows up
 * as a note before the sync that should have preceded it. `onFile`/`onFolder` run just before the
 * real call, to look at the disk at that moment (has the rename happened yet?).
 */
export class SyncLog implements FileSync {
  readonly entries: string[] = [];
  onFile?: (path: string) => void;
  onFolder?: (dir: string) => void;

  async file(handle: Parameters<FileSync['file']>[0], path: string, dataOnly?: boolean): Promise<void> {
    this.onFile?.(path);
    await realSync.file(handle, path, dataOnly);
    this.entries.push(`synced ${basename(path).replace(/\.tmp-[0-9a-f]+$/, '.tmp')}`);
  }

  async folder(dir: string): Promise<void> {
    this.onFolder?.(dir);
    await realSync.folder(dir);
    this.entries.push('synced folder');
  }

  note(entry: string): void {
    this.entries.push(entry);
  }

  /** The entries from `from` on. */
  since(from: number): string[] {
    return this.entries.slice(from);
  }
}
