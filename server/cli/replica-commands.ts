import type { Command } from 'commander';
import { type AdminEnv, adminCli, print } from './admin-common.js';
import { CliError } from './cli-error.js';
import { flag, wholeNumber } from './flags.js';
import { printTable, relative, shortReplicaId as shortId } from './format.js';

/** `replicas --expect N` found fewer replicas able to serve: for monitoring scripts, apart from 1 (failure) and 2 (usage). */
export const EXPECT_UNMET_EXIT = 3;

interface ListedReplica {
  id: string;
  state: 'live' | 'dead';
  ready: boolean | null;
  problems: string[];
}

/** Enough of a replica id to tell replicas apart in a table (`--json` has it whole). */

/**
 * Why fewer than `expected` replicas can serve, or null when enough can. A replica serves when it is
 * live and not known to be unready: one of a version that does not report readiness counts.
 */
export function unmetExpectation(replicas: readonly ListedReplica[], expected: number): string | null {
  const serving = replicas.filter((r) => r.state === 'live' && r.ready !== false);
  if (serving.length >= expected) return null;
  const why = replicas
    .filter((r) => !serving.includes(r))
    .map((r) =>
      r.state === 'dead'
        ? `${shortId(r.id)} dead`
        : `${shortId(r.id)} not ready${r.problems.length > 0 ? ` (${r.problems.join('; ')})` : ''}`,
    );
  // A replica that stopped, or died and was reaped (15 s without a heartbeat), has no row left to name.
  const unlisted = expected - replicas.length;
  if (unlisted > 0)
    why.push(`${unlisted} not listed (stopped, never started, or dead for over 15 s and removed)`);
  return (
    `${serving.length} of the ${expected} expected replicas are live and ready` +
    `${why.length > 0 ? `: ${why.join(', ')}` : ''}\n  fix: start the missing ones, or read the not-ready ones' /healthz and log (README: "When something fails")`
  );
}

const heartbeatWords = (ageMs: number | null) =>
  ageMs === null ? '-' : `${(ageMs / 1000).toFixed(1)} s ago`;

/** `replicas`: the server processes of the deployment, as the database records them. */
export function registerReplicaCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  admin.command(
    program,
    'replicas',
    'list the server processes of the deployment: where each runs, its version, heartbeat, readiness and sessions',
    {
      expect: flag(
        '--expect <n>',
        `exit ${EXPECT_UNMET_EXIT} when fewer than n replicas are live and ready (for monitoring and scripts)`,
        wholeNumber(1, 10_000).optional(),
      ),
    },
    async (client, options) => {
      const view = await client.replicas.list.query({});
      print(options, view, () => {
        printTable(
          ['ID', 'URL', 'HOST', 'PID', 'VERSION', 'STARTED', 'HEARTBEAT', 'STATE', 'READY', 'SESSIONS'],
          view.replicas.map((r) => [
            `${r.self ? '* ' : ''}${shortId(r.id)}`,
            r.url,
            r.host,
            r.pid,
            r.version,
            relative(r.startedAt),
            heartbeatWords(r.heartbeatAgeMs),
            r.state,
            r.ready === null ? '-' : r.ready ? 'yes' : 'no',
            r.sessions,
          ]),
        );
        if (view.backend === 'embedded') {
          console.log(
            'One server on the embedded store (its data dir is for one process). Replicas share a PostgreSQL database: serve --database-url.',
          );
          return;
        }
        console.log(replicasSummary(view));
        for (const r of view.replicas)
          if (r.problems.length > 0) console.log(`${shortId(r.id)} is not ready: ${r.problems.join('; ')}.`);
        const versions = new Set(view.replicas.map((r) => r.version ?? 'unknown'));
        if (versions.size > 1)
          console.log(
            `The replicas run different versions (${[...versions].join(', ')}): an upgrade in progress?`,
          );
      });
      const unmet = options.expect === undefined ? null : unmetExpectation(view.replicas, options.expect);
      if (unmet) throw new CliError(unmet, EXPECT_UNMET_EXIT);
    },
  );
}

interface ReplicasView {
  replicas: ReadonlyArray<{ state: 'live' | 'dead'; sessions: number }>;
  deadAfterMs: number | null;
}

/**
 * The line under the replicas table: how many are live and dead, and the agent sessions the live
 * ones hold (those a dead replica had listed are no agent's any more: counted apart).
 */
export function replicasSummary(view: ReplicasView): string {
  const live = view.replicas.filter((r) => r.state === 'live').length;
  const dead = view.replicas.length - live;
  const deadAfter = (view.deadAfterMs ?? 0) / 1000;
  const sessionsOf = (state: 'live' | 'dead') =>
    view.replicas.filter((r) => r.state === state).reduce((sum, r) => sum + r.sessions, 0);
  const [held, left] = [sessionsOf('live'), sessionsOf('dead')];
  return (
    `${live} live replica${live === 1 ? '' : 's'}${dead > 0 ? `, ${dead} dead (removed by a live replica's heartbeat once it has been up ${deadAfter} s itself)` : ''}; ` +
    `${held} agent session${held === 1 ? '' : 's'}${left > 0 ? ` (and ${left} listed by dead replicas, gone with them)` : ''}. * the replica that answered. ` +
    `A heartbeat comes every 5 s; one older than ${deadAfter} s counts as dead.`
  );
}
