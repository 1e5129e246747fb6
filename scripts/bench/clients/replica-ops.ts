import { monoMs } from '../lib/stats.js';
import type { Group } from '../protocol.js';
import { ProjectSim, type Sim } from './sims.js';

/** What a client process holds, as replica-ops needs it. */
export interface SimState {
  pool: Record<Group, Sim[]>;
  live: Set<Sim>;
  byId: Map<string, Sim>;
  waitFor<T>(check: () => T | undefined, timeoutMs: number, onTimeout: () => T): Promise<T>;
}

/** What the sims watched by `watch` did after their replica was killed. */
export interface MovedBack {
  watched: number;
  /** Ready again, on another server, at or after `sinceMs`. */
  back: number;
  ended: number;
  lastReadyAtMs: number;
  /** Where they are now: server URL → sims. */
  byServer: Record<string, number>;
}

/**
 * The client-process operations of the replicas phase: which replicas each sim tries, where the
 * live ones are, stopping some, and following the sims of a replica that is killed.
 */
export function replicaOps(state: SimState) {
  const { pool, live, byId } = state;
  let watched: { server: string; sims: Set<Sim> } = { server: '', sims: new Set() };

  const routed = (sim: Sim, servers: string[]): Sim => {
    if (!(sim instanceof ProjectSim)) throw new TypeError('replicas are for project sims only');
    const copy = sim.withServers(servers);
    byId.set(copy.id, copy);
    return copy;
  };

  return {
    /**
     * Pooled sims of `group` are given server lists, round-robin over `lists` (one list with one
     * server pins them to that replica). With `recycle`, sims of the group that ended on a stop (exit
     * 0) go back to the pool first, so a fleet can be connected again with other lists.
     */
    route: ({ group, lists, recycle }: { group: Group; lists: string[][]; recycle?: boolean }) => {
      if (recycle) {
        for (const sim of [...byId.values()])
          if (sim.group === group && sim.ended && sim.exitCode === 0 && !live.has(sim)) pool[group].push(sim);
      }
      pool[group] = pool[group].map((sim, i) => routed(sim, lists[i % lists.length]!));
      return pool[group].length;
    },
    /** Ready sims on each server: URL → count. */
    liveOn: () => {
      const counts: Record<string, number> = {};
      for (const sim of live) if (sim.ready) counts[sim.server] = (counts[sim.server] ?? 0) + 1;
      return counts;
    },
    /** `count` random ready sims of `group`, with the server each is on. */
    pickReadyWhere: ({ group, count }: { group: Group; count: number }) => {
      const candidates = [...live].filter((s) => s.group === group && s.ready);
      for (let i = candidates.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
      }
      return candidates.slice(0, count).map((s) => ({ id: s.id, server: s.server }));
    },
    /** Stops `count` live sims of `group` and waits (bounded) until they have ended. */
    stopSome: async ({ group, count, timeoutMs }: { group: Group; count: number; timeoutMs: number }) => {
      const sims = [...live].filter((s) => s.group === group).slice(0, count);
      for (const sim of sims) await sim.stop();
      return state.waitFor(
        () => (sims.every((s) => s.ended) ? sims.length : undefined),
        timeoutMs,
        () => sims.filter((s) => s.ended).length,
      );
    },
    /** Remembers the ready sims on `server` (before it is killed); returns how many. */
    watch: ({ server }: { server: string }) => {
      watched = { server, sims: new Set([...live].filter((s) => s.ready && s.server === server)) };
      return watched.sims.size;
    },
    /** Waits until every watched sim is ready on another server since `sinceMs`, or has ended. */
    awaitWatchedBack: ({ sinceMs, timeoutMs }: { sinceMs: number; timeoutMs: number }) => {
      const isBack = (s: Sim) => s.ready && s.readyAt >= sinceMs && s.server !== watched.server;
      const result = (): MovedBack => {
        const byServer: Record<string, number> = {};
        let back = 0;
        let ended = 0;
        let last = 0;
        for (const sim of watched.sims) {
          if (sim.ended) ended++;
          else if (isBack(sim)) {
            back++;
            last = Math.max(last, sim.readyAt);
            byServer[sim.server] = (byServer[sim.server] ?? 0) + 1;
          }
        }
        return { watched: watched.sims.size, back, ended, lastReadyAtMs: last, byServer };
      };
      const t0 = monoMs();
      return state.waitFor(
        () => {
          const r = result();
          return r.back + r.ended === r.watched || monoMs() - t0 > timeoutMs ? r : undefined;
        },
        timeoutMs,
        result,
      );
    },
  };
}
