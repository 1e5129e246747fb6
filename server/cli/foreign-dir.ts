import { foreignDirMessage } from '../../shared/foreign-dir.js';

/** The one line for a data dir owned by another user, or null when it is not (see foreignDirMessage). */
export function foreignDataDirMessage(dir: string): Promise<string | null> {
  return foreignDirMessage(dir, { what: 'data dir', flag: '--data-dir' });
}
