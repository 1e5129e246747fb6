import type { IdentityStore } from './identity-store.js';
import type { AgentLogger } from './log.js';

/**
 * Removes the identity of `connectorId` (revoked, deleted) and says how it went, in one line. True
 * when it is gone: only then is the wipe acknowledged to the server, which reports it to the admin
 * as confirmed.
 */
export async function wipeIdentity(
  store: Pick<IdentityStore, 'wipe' | 'identityFile'>,
  connectorId: string,
  logger: Pick<AgentLogger, 'info' | 'error'>,
): Promise<boolean> {
  try {
    if ((await store.wipe(connectorId)) === 'not ours') {
      // Copied over ours while this agent ran: another connector's, not this one's to wipe.
      logger.error(
        `${store.identityFile} now holds another connector's identity, not ${connectorId}'s; left as it is`,
      );
      return false;
    }
    logger.info('identity wiped', { file: store.identityFile });
    return true;
  } catch (error) {
    logger.error(
      `could not remove the identity file: remove ${store.identityFile} by hand (the server refuses it anyway)`,
      { error: String(error) },
    );
    return false;
  }
}
