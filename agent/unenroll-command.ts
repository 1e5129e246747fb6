import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describeNetworkError, tlsMisconfiguration } from '../shared/network-errors.js';
import { readableStateDir, readCaFile, resolveStateDir, UsageError, uncheckedTlsWarning } from './config.js';
import { EXIT } from './exit-codes.js';
import { collectHostFacts } from './host-facts.js';
import { type AgentStatus, IdentityFileError, IdentityStore, serversOf } from './identity-store.js';
import type { AgentLogger } from './log.js';
import { isProcessRunning } from './process-liveness.js';
import { runSession } from './session.js';
import { cannotWrite } from './state-dir-problems.js';
import { readStatusSummary } from './status-command.js';
import { createTransport } from './transport.js';

export interface UnenrollFlags {
  stateDir?: string;
  caFile?: string;
  force?: boolean;
  evenIfRunning?: boolean;
  timeout?: string;
}

/** The state dir as unenroll uses it: status writes of its one-off session would pass for a run's. */
class UnenrollStore extends IdentityStore {
  override async writeStatus(_status: Omit<AgentStatus, 'updatedAt' | 'pid' | 'pidStart'>): Promise<void> {}

  /** The identity and the last state: nothing of the enrollment is left. */
  async wipeAll(): Promise<void> {
    await this.wipe();
    await unlink(join(this.dir, 'status.json')).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
}

/** `unenroll --help`, README. */
export const UNENROLL_EXIT_CODES_HELP = `Exit codes: 0 unenrolled (or not enrolled; or wiped with --force) · 1 unexpected failure, or an
unreadable identity file without --force · 2 usage error, the agent is running, or a TLS
misconfiguration · 10 the server could not be reached: nothing changed (retry, or --force)`;

/** How long a running agent has to stop (it closes its session and exits at once on SIGTERM). */
const AGENT_STOP_WAIT_MS = 10_000;

/**
 * `--even-if-running`: stops the agent that runs with this state dir as a stop of its service does
 * (SIGTERM: exit 0, so a unit restarted on failure stays stopped). Left running, it would have its
 * session taken by unenroll's and stop as a clone does (exit 6, "replaced"), which reads as a leaked
 * identity. One that cannot be signalled (another user's) or does not stop in time is replaced so.
 */
async function stopRunningAgent(agent: { pid: number; pidStart?: number | null }, logger: AgentLogger) {
  try {
    process.kill(agent.pid, 'SIGTERM');
  } catch (error) {
    logger.warn(
      `cannot stop the agent running as pid ${agent.pid} (${(error as NodeJS.ErrnoException).code}): unenrolling anyway, which replaces its session (it exits 6)`,
    );
    return;
  }
  const deadline = Date.now() + AGENT_STOP_WAIT_MS;
  // Bounded: 100 ms steps until the deadline.
  while (isProcessRunning(agent.pid, agent.pidStart) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 100));
  if (isProcessRunning(agent.pid, agent.pidStart))
    logger.warn(
      `the agent running as pid ${agent.pid} did not stop within ${AGENT_STOP_WAIT_MS / 1000} s: unenrolling anyway, which replaces its session (it exits 6)`,
    );
  else logger.info(`stopped the agent that ran as pid ${agent.pid} (SIGTERM)`);
}

const deleteHint = (connectorId: string) =>
  `on the admin side: npm run -s server -- connectors delete ${connectorId}`;

/** How long each server of the list has to answer /healthz before an agent is stopped for an unenroll. */
const PROBE_MS = 5000;

/**
 * Null when a server of `servers` answers /healthz 200; else why none did (`tls`: a TLS
 * misconfiguration, which a flag fixes).
 */
async function noServerAnswers(
  servers: readonly string[],
  fetchFn: typeof fetch,
  caGiven: boolean,
): Promise<{ problem: string; tls: boolean } | null> {
  const problems: string[] = [];
  let tls = true;
  for (const server of servers) {
    try {
      const response = await fetchFn(`${server}/healthz`, { signal: AbortSignal.timeout(PROBE_MS) });
      if (response.ok) return null;
      tls = false;
      problems.push(`${server} answered HTTP ${response.status}`);
    } catch (error) {
      const misconfigured = tlsMisconfiguration(error, server, { caGiven });
      if (!misconfigured) tls = false;
      problems.push(misconfigured ?? `cannot reach ${server}: ${describeNetworkError(error)}`);
    }
  }
  return { problem: problems.join('; '), tls };
}

/**
 * `connector-agent unenroll`: deletes this host's connector on the server over a session of its own
 * identity, then wipes the identity and the last state. Resolves with the exit code.
 */
export async function unenroll(flags: UnenrollFlags, logger: AgentLogger): Promise<number> {
  const timeoutSeconds = Number(flags.timeout ?? '20');
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0 || timeoutSeconds > 3600)
    throw new UsageError(`--timeout: "${flags.timeout}" is not a number of seconds between 1 and 3600`);
  const tlsUnchecked = uncheckedTlsWarning();
  if (tlsUnchecked) logger.warn(tlsUnchecked);
  const store = new UnenrollStore(await readableStateDir(resolveStateDir(flags.stateDir)));
  let identity: Awaited<ReturnType<IdentityStore['load']>>;
  try {
    identity = await store.load();
  } catch (error) {
    if (!(error instanceof IdentityFileError)) throw error;
    if (!flags.force) {
      logger.error(`${error.message} Or pass --force to wipe it without telling the server.`);
      return EXIT.FAILED;
    }
    await store.wipeAll();
    logger.warn(`wiped ${store.identityFile} (unreadable); if the server lists this host, delete it there`);
    return EXIT.STOPPED;
  }
  if (!identity) {
    logger.info(`not enrolled (no identity in ${store.dir}): nothing to unenroll`);
    return EXIT.STOPPED;
  }
  const summary = await readStatusSummary(store.dir);
  if (summary.running && !flags.evenIfRunning) {
    logger.error(
      `the agent runs with this state dir as pid ${summary.agent?.pid}: stop it first ` +
        '(sudo systemctl stop connector-agent), or pass --even-if-running (it is then stopped first)',
    );
    return EXIT.USAGE;
  }
  const caPem = await readCaFile(flags.caFile);
  if (summary.running && summary.agent) {
    // Stopped only once a server of its list answers: else the host went offline (a stopped unit
    // stays stopped) for an unenroll that could not happen, and was told "nothing changed".
    const silent = await noServerAnswers(serversOf(identity), createTransport(caPem).fetch, caPem !== null);
    if (silent) {
      logger.error(
        `${silent.problem}: nothing changed, and the agent running as pid ${summary.agent.pid} was left running`,
      );
      return silent.tls ? EXIT.USAGE : EXIT.SERVER_UNREACHABLE;
    }
    await stopRunningAgent(summary.agent, logger);
  }
  const restartHint =
    summary.running && summary.agent
      ? ` The agent that ran as pid ${summary.agent.pid} was stopped: start it again (sudo systemctl start connector-agent) while the host stays enrolled.`
      : '';

  const stop = AbortSignal.timeout(timeoutSeconds * 1000);
  /** The server that deleted the connector (of the identity's list, the one the session reached). */
  let deletedBy: string | null = null;
  const code = await runSession({
    identity,
    store,
    transport: createTransport(caPem),
    logger,
    signal: stop,
    hostFacts: await collectHostFacts(),
    unenroll: {
      onDeleted: (server) => {
        deletedBy = server;
      },
    },
  });
  const { connectorId } = identity;
  const deleted = deletedBy !== null;
  /** Every server the identity may be presented to: the session tried them all. */
  const server = serversOf(identity).join(', ');
  if (code === EXIT.IDENTITY_GONE || code === EXIT.REVOKED) {
    // The session wiped the identity; the last state goes too. The server's side is done either
    // way: a state dir that will not let go of the files is said once, with what to remove.
    const left = await store.wipeAll().then(
      () => null,
      (error: unknown) => error,
    );
    if (left) {
      logger.error(
        `${deleted ? `${deletedBy} deleted connector ${connectorId}, but ` : ''}${cannotWrite(store.dir, left, `remove ${store.identityFile} and status.json by hand`)}`,
      );
      return EXIT.FAILED;
    }
    if (deleted) logger.info(`unenrolled: ${deletedBy} deleted connector ${connectorId}; identity wiped`);
    else
      logger.warn(
        `the server refused this identity (${code === EXIT.REVOKED ? 'revoked' : 'deleted, unknown or expired'}); ` +
          `identity wiped. If it still lists connector ${connectorId}, delete it ${deleteHint(connectorId)}`,
      );
    return EXIT.STOPPED;
  }
  const unreachable = code === EXIT.SERVER_UNREACHABLE || code === EXIT.STOPPED || code === EXIT.USAGE;
  if (!unreachable) return code;
  if (code === EXIT.STOPPED) logger.error(`no answer from ${server} within ${timeoutSeconds} s`);
  if (!flags.force) {
    logger.error(
      `nothing changed: connector ${connectorId} is still enrolled. Retry when ${server} can be reached, or pass ` +
        `--force to wipe this host's identity anyway (then delete the connector ${deleteHint(connectorId)}).${restartHint}`,
    );
    return code === EXIT.USAGE ? EXIT.USAGE : EXIT.SERVER_UNREACHABLE;
  }
  await store.wipeAll();
  logger.warn(
    `identity wiped (--force), but ${server} was not told and still lists connector ${connectorId}: ` +
      `delete it ${deleteHint(connectorId)}`,
  );
  return EXIT.STOPPED;
}
