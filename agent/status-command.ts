import { escapeUnsafe } from '../shared/text.js';
import { EXIT } from './exit-codes.js';
import { type AgentStatus, FINAL_STATES, IdentityStore, serversOf } from './identity-store.js';
import { isProcessRunning } from './process-liveness.js';

/** What `connector-agent status` prints with --json. */
export interface StatusSummary {
  stateDir: string;
  enrolled: boolean;
  identityError?: string;
  connectorId?: string;
  groupId?: string;
  server?: string;
  /** The servers the identity may be presented to (replicas), when more than the one it enrolled at. */
  servers?: string[];
  enrolledAt?: string;
  identityExpiresAt?: string;
  /** An agent process that wrote the last state still runs. */
  running: boolean;
  /** Running and connected to the server. */
  connected: boolean;
  /** The last agent process is gone without writing a final state: killed (e.g. -9) or crashed. */
  stoppedUncleanly: boolean;
  /** The last state the agent wrote (null if none ever ran with this state dir). */
  agent: AgentStatus | null;
  /** The exit code `status` ends with (see STATUS_EXIT_CODES_HELP). */
  exitCode: number;
}

/** `status --help`, README: what a script can read from the exit code. */
export const STATUS_EXIT_CODES_HELP = `Exit codes: 0 enrolled, running and connected · 1 the identity file cannot be read or is damaged
· 2 usage error · 7 enrolled and running, not connected (connecting or retrying) · 8 enrolled, no
agent running (stopped, exited, killed or crashed) · 9 not enrolled`;

/** Reads the state dir and decides, from the identity and the last state's process, what runs. */
export async function readStatusSummary(stateDir: string): Promise<StatusSummary> {
  const store = new IdentityStore(stateDir);
  const identity = await store.load().catch((error: Error) => ({ error: error.message }));
  const agent = await store.readStatus();
  const alive =
    agent !== null && !FINAL_STATES.has(agent.state) && isProcessRunning(agent.pid, agent.pidStart);
  const enrolled = Boolean(identity && !('error' in identity));
  const connected = alive && agent?.state === 'connected';
  const exitCode =
    identity && 'error' in identity
      ? EXIT.FAILED
      : !enrolled
        ? EXIT.NOT_ENROLLED
        : connected
          ? EXIT.STOPPED
          : alive
            ? EXIT.NOT_CONNECTED
            : EXIT.NOT_RUNNING;
  return {
    stateDir: store.dir,
    enrolled,
    ...(identity && 'error' in identity ? { identityError: identity.error } : {}),
    ...(identity && !('error' in identity)
      ? {
          connectorId: identity.connectorId,
          groupId: identity.groupId,
          server: identity.server,
          ...(serversOf(identity).length > 1 ? { servers: serversOf(identity) } : {}),
          enrolledAt: identity.enrolledAt,
          identityExpiresAt: identity.identityExpiresAt,
        }
      : {}),
    running: alive,
    connected,
    stoppedUncleanly: agent !== null && !alive && !FINAL_STATES.has(agent.state),
    agent,
    exitCode,
  };
}

/**
 * The summary as the lines `status` prints, control characters escaped: the last state holds what a
 * server said (a revoke's reason), which must not rewrite the terminal of whoever reads it.
 */
export function statusLines(summary: StatusSummary): string[] {
  return summaryLines(summary).map(escapeUnsafe);
}

/** Where every value of `status` starts: past the longest label, so that the values line up. */
const LABEL_WIDTH = 'identity expires: '.length;

/** One `label: value` line of `status`, the value in the values' column. */
const line = (label: string, value: string) => `${label}:`.padEnd(LABEL_WIDTH) + value;

function summaryLines(summary: StatusSummary): string[] {
  const lines = [
    line('state dir', summary.stateDir),
    line('enrolled', summary.enrolled ? `yes, as ${summary.connectorId} (group ${summary.groupId})` : 'no'),
  ];
  if (summary.identityError) lines.push(line('identity', summary.identityError));
  // With replicas the server it enrolled through is not always the one it talks to now.
  if (summary.server) lines.push(line('enrolled via', summary.server));
  if (summary.servers) lines.push(line('servers', summary.servers.join(', ')));
  if (summary.identityExpiresAt) lines.push(line('identity expires', summary.identityExpiresAt));
  const agent = summary.agent;
  if (!agent) {
    // Unreadable is not "never ran": the status file is as closed to this user as the identity.
    lines.push(
      line(
        'agent',
        summary.identityError?.includes('cannot be read by this user')
          ? 'unknown (its status cannot be read by this user either)'
          : 'not running (no record of an agent here: none has run with this state dir, or unenroll removed it)',
      ),
    );
    return lines;
  }
  if (summary.running)
    lines.push(
      line(
        'agent',
        `running as pid ${agent.pid}, ${summary.connected ? `connected to ${agent.server ?? 'its server'}` : 'not connected'}`,
      ),
    );
  else if (summary.stoppedUncleanly)
    lines.push(
      line(
        'agent',
        `not running (last ran as pid ${agent.pid}, stopped uncleanly: killed or crashed while ${agent.state})`,
      ),
    );
  else lines.push(line('agent', `not running (last ran as pid ${agent.pid}, exited: ${exitWords(agent)})`));
  lines.push(
    line(
      'last state',
      `${agent.state}${agent.status ? ` (${agent.status})` : ''} at ${agent.updatedAt}, pid ${agent.pid}`,
    ),
  );
  if (agent.detail) lines.push(line('detail', agent.detail));
  return lines;
}

/**
 * A line for `status` run by another user than root, with no state dir named, that found nothing in
 * its own default while root's exists: an agent run as root (the systemd unit) keeps its state
 * there, and "enrolled: no" alone sent people to enroll the host again. Null otherwise.
 */
export function rootStateHint(
  summary: Pick<StatusSummary, 'enrolled' | 'agent' | 'identityError'>,
  given: { stateDirNamed: boolean; uid: number | undefined; rootDirExists: boolean; rootDir: string },
): string | null {
  if (summary.enrolled || summary.agent || summary.identityError) return null;
  if (given.stateDirNamed || given.uid === 0 || given.uid === undefined || !given.rootDirExists) return null;
  return `note: ${given.rootDir} exists: an agent run as root (the systemd unit) keeps its state there; read it with sudo connector-agent status`;
}

/**
 * Why the agent exited, in words: `deleted` alone read as "an admin deleted it" also when the
 * server refused the identity (expired, a retired signing key) and the agent wiped it.
 */
function exitWords(agent: { state: string; detail: string | null }): string {
  if (agent.state !== 'deleted' || !agent.detail || agent.detail === 'deleted') return agent.state;
  if (agent.detail === 'CONNECTOR_NOT_FOUND') return 'deleted (the server no longer knows its connector)';
  return `its identity was refused (${agent.detail}) and wiped`;
}
