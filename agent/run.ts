import { PrivateDirError, removeStaleTemps } from '../shared/private-files.js';
import { keyIdOf, PROVISIONING_KEY_PREFIX } from '../shared/protocol.js';
import type { AgentConfig } from './config.js';
import { EnrollmentMisdirected, EnrollmentRedirected, EnrollmentRefused, enroll } from './enroll.js';
import { collectHostFacts } from './host-facts.js';
import {
  type AgentStatus,
  IdentityFileError,
  IdentityStore,
  type SavedIdentity,
  serversOf,
} from './identity-store.js';
import type { AgentLogger } from './log.js';
import { generateAgentKeyPair } from './proof.js';
import { allKnown } from './servers.js';
import { EXIT, runSession } from './session.js';
import { lockStateDir, StateDirBusyError, type StateDirLock } from './state-dir-lock.js';
import { cannotWrite, openAncestor } from './state-dir-problems.js';
import { createTransport, TlsMisconfigured } from './transport.js';

/**
 * The agent's life: use the saved identity or enroll with the key, then stay connected. Resolves
 * with the process exit code; `signal` stops it cleanly (exit 0).
 */
export async function runAgent(
  config: AgentConfig,
  logger: AgentLogger,
  signal: AbortSignal,
): Promise<number> {
  if (config.tlsUnchecked) logger.warn(config.tlsUnchecked);
  const store = new IdentityStore(config.stateDir, (error) =>
    logger.warn(
      cannotWrite(
        config.stateDir,
        error,
        "status.json is not updated, so 'connector-agent status' shows an older state until it is",
      ),
    ),
  );
  try {
    await store.ensureDir();
  } catch (error) {
    // Another user's dir could hold links planted to redirect the private key: a usage error.
    if (!(error instanceof PrivateDirError)) throw error;
    logger.error(error.message, { code: error.code });
    return EXIT.USAGE;
  }
  const open = await openAncestor(store.dir);
  if (open) logger.warn(open);
  let lock: StateDirLock;
  try {
    lock = await lockStateDir(store.dir);
  } catch (error) {
    if (error instanceof StateDirBusyError) {
      logger.error(error.message);
      return EXIT.USAGE;
    }
    logger.error(cannotWrite(store.dir, error, 'the agent keeps its state there'));
    return EXIT.FAILED;
  }
  try {
    // Left by an agent killed mid-write; the lock says no other agent writes here now.
    await removeStaleTemps(store.dir);
    return await runLocked(config, logger, signal, store, lock);
  } finally {
    await lock.release();
  }
}

/** The agent's life once it is the one agent of its state dir. */
async function runLocked(
  config: AgentConfig,
  logger: AgentLogger,
  signal: AbortSignal,
  store: IdentityStore,
  lock: StateDirLock,
): Promise<number> {
  const transport = createTransport(config.caPem);
  /** Before there is an identity, the status file names only the server. */
  const writeEnrollmentStatus = (state: AgentStatus['state'], detail: string | null) =>
    store.writeStatus({ state, status: null, connectorId: null, server: config.servers.join(', '), detail });
  /** --allow-server-change took a new server list: saved by the session once one of them answers. */
  let serverListMoved = false;
  let identity = await store.load().catch((error) => {
    if (error instanceof IdentityFileError) {
      logger.error(error.message);
      return error;
    }
    throw error;
  });
  if (identity instanceof IdentityFileError) {
    // A damaged file (or a link, or another user's) is there at the next start too: exit 2, which
    // the unit does not restart, so that the host shows as failed instead of restarting for ever.
    if (!identity.needsFixing) return EXIT.FAILED;
    await writeEnrollmentStatus('misconfigured', identity.message).catch(() => {});
    return EXIT.USAGE;
  }
  const hostFacts = await collectHostFacts();

  if (identity) {
    // Left by an enrollment whose key pair could not be removed after its save: done with.
    await store.dropEnrollmentKey().catch(() => {});
    if (config.provisioningKey)
      logger.info('already enrolled: using the saved identity and ignoring the provisioning key');
    const known = serversOf(identity);
    if (!allKnown(config.servers, known)) {
      // Each session hands the server this identity and a fresh proof: pointed somewhere else by
      // mistake or by a tampered unit file, the agent would hand them to whoever listens there.
      const others = config.servers.filter((server) => !known.includes(server)).join(', ');
      if (!config.allowServerChange) {
        logger.error(
          `this identity was issued by ${known.join(', ')}, not by --server ${others}; the agent will not present it elsewhere. ` +
            'If the enrollment server really moved (or gained replicas), pass --allow-server-change once (the new list is saved with the identity once a session there is ready).',
        );
        return EXIT.USAGE;
      }
      logger.warn(
        'the enrollment server moved: using --server, and saving it with the identity once a session there is ready',
        { enrolledWith: known.join(', '), server: config.servers.join(', ') },
      );
      identity = { ...identity, server: config.servers[0] as string, servers: config.servers };
      serverListMoved = true;
    }
  } else {
    if (!config.provisioningKey && config.keyFileProblem) {
      logger.error(`not enrolled, and ${config.keyFileProblem}`);
      return EXIT.USAGE;
    }
    if (!config.provisioningKey) {
      logger.error(
        'not enrolled and no provisioning key: pass --key-file FILE, --key KEY or env CONNECTOR_PROVISIONING_KEY',
      );
      return EXIT.USAGE;
    }
    if (config.keyExposure) logger.warn(config.keyExposure);
    // Saved before the key is sent: a state dir that cannot keep it spends no use of the key.
    const forKeyId = keyIdOf(config.provisioningKey, PROVISIONING_KEY_PREFIX, 'pk');
    const keyPair = await store.enrollmentKeyPair(generateAgentKeyPair, forKeyId).catch((error: unknown) => {
      logger.error(cannotWrite(store.dir, error, 'nothing was sent to the server'));
      return null;
    });
    if (!keyPair) return EXIT.FAILED;
    logger.info(`enrolling with ${config.servers.join(', ')}`, { stateDir: config.stateDir });
    await writeEnrollmentStatus('enrolling', null);
    try {
      identity = await enroll(
        { ...config, provisioningKey: config.provisioningKey },
        transport,
        logger,
        signal,
        hostFacts,
        keyPair,
      );
    } catch (error) {
      if (error instanceof EnrollmentRefused) {
        logger.error(`enrollment refused: ${error.message}`, { reason: error.reason });
        await writeEnrollmentStatus('refused', error.reason);
        return EXIT.REFUSED;
      }
      if (error instanceof EnrollmentRedirected) {
        logger.error(error.message);
        await writeEnrollmentStatus(
          'refused',
          `HTTP ${error.status} redirect to ${error.location ?? '-'} not followed`,
        );
        return EXIT.USAGE;
      }
      if (error instanceof TlsMisconfigured || error instanceof EnrollmentMisdirected) {
        logger.error(error.message);
        await writeEnrollmentStatus('misconfigured', error.message);
        return EXIT.USAGE;
      }
      throw error;
    }
    if (!identity) {
      // Stopped while enrolling: an answer still on its way is found again by the next start, which
      // enrolls with the same saved key pair and gets the same connector.
      await writeEnrollmentStatus('stopped', 'stopped while enrolling');
      return EXIT.STOPPED;
    }
    const saved = await saveOrSay(
      store,
      identity,
      logger,
      `enrolled as ${identity.connectorId}, but its identity is not saved; the next start enrolls with the same key pair and gets the same connector, with no new use of the key`,
    );
    if (!saved) return EXIT.FAILED;
    await store.dropEnrollmentKey().catch(() => {});
    logger.info('enrolled; identity saved', {
      connector: identity.connectorId,
      // Of several replicas, the one that answered: its log has the enrollment.
      ...(config.servers.length > 1 ? { server: identity.server } : {}),
      file: store.identityFile,
    });
  }
  return runSession({
    identity,
    store,
    transport,
    logger,
    signal,
    hostFacts,
    servers: config.servers,
    relock: () => lock.reassert(),
    serverListMoved,
  });
}

/** Saves `identity`; a state dir that will not take it is one line saying what that `means`: false. */
async function saveOrSay(
  store: IdentityStore,
  identity: SavedIdentity,
  logger: AgentLogger,
  means: string,
): Promise<boolean> {
  try {
    await store.save(identity);
    return true;
  } catch (error) {
    logger.error(cannotWrite(store.dir, error, means));
    return false;
  }
}
