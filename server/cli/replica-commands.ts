import type { Command } from 'commander';
import { type AdminEnv, adminCli, print } from './admin-common.js';
import { printTable, relative } from './format.js';

/** Enough of a replica id to tell replicas apart in a table (`--json` has it whole). */
const shortId = (id: string) => id.slice(0, 8);

const heartbeatWords = (ageMs: number | null) =>
  ageMs === null ? '-' : `${(ageMs / 1000).toFixed(1)} s ago`;

/** `replicas`: the server processes of the deployment, as the database records them. */
export function registerReplicaCommands(program: Command, env: AdminEnv): void {
  const admin = adminCli(env);
  admin.command(
    program,
    'replicas',
    'list the server processes of the deployment: where each runs, its version, heartbeat, readiness and sessions',
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
        const live = view.replicas.filter((r) => r.state === 'live').length;
        const dead = view.replicas.length - live;
        console.log(
          `${live} live replica${live === 1 ? '' : 's'}${dead > 0 ? `, ${dead} dead (removed at the next live replica's heartbeat)` : ''}; ` +
            `${view.sessions} agent session${view.sessions === 1 ? '' : 's'}. * the replica that answered. ` +
            `A heartbeat comes every 5 s; one older than ${(view.deadAfterMs ?? 0) / 1000} s counts as dead.`,
        );
        for (const r of view.replicas)
          if (r.problems.length > 0) console.log(`${shortId(r.id)} is not ready: ${r.problems.join('; ')}.`);
        const versions = new Set(view.replicas.map((r) => r.version ?? 'unknown'));
        if (versions.size > 1)
          console.log(
            `The replicas run different versions (${[...versions].join(', ')}): an upgrade in progress?`,
          );
      });
    },
  );
}
