import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EXIT } from '../agent/exit-codes.js';
import { type AdminClient, createAdminClient } from '../server/admin-client.js';
import { connectSim, enrollSim } from './helpers/agent-sim.js';
import {
  type AgentProc,
  readIdentity,
  spawnAgent,
  waitConnected,
  waitForAgentStatus,
} from './helpers/agents.js';
import { freshDatabase } from './helpers/postgres.js';
import type { ServerProc } from './helpers/processes.js';
import { spawnReplicas } from './helpers/replicas.js';
import { tempDir } from './helpers/server.js';

/** An agent process starts in ~2 s on an idle machine, several times that on a loaded two-core one. */
const AGENT_START_MS = 60_000;
/**
 * The first retry after a lost session is drawn from [0, 1 s) (full jitter, attempt 0: agent/backoff.ts)
 * and goes to the next server of the agent's list, a live one when one replica died. What the agent
 * logs is the delay it chose, so that is what is asserted; the wall-clock wait only bounds the test.
 */
const FIRST_RETRY_MAX_MS = 1000;
/** A replica counts as dead 15 s after its last heartbeat (README "Dead replicas"), which is before the kill. */
const DEAD_AFTER_MS = 15_000;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

function admin(server: ServerProc): AdminClient {
  return createAdminClient({ url: server.url, adminKey: server.adminKey });
}

/** The agent's JSON log lines (--log-json), in order. */
function logLines(agent: AgentProc): Array<{ time: string; level: string; msg: string }> {
  return agent
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line));
}

function runAgent(args: string[], stateDir: string): AgentProc {
  const agent = spawnAgent([...args, '--log-json'], stateDir);
  // A stopped (SIGSTOP) agent gets SIGKILL at the end of the grace: nothing outlives the test.
  cleanups.push(() => agent.stop('SIGTERM', 2000));
  return agent;
}

describe('a replica killed (SIGKILL) under real agents given every replica', () => {
  it('its agents move to the others at their first retry, revoked ones stay out, its sessions are reaped', async () => {
    const db = await freshDatabase();
    cleanups.push(() => db[Symbol.asyncDispose]());
    const replicas = await spawnReplicas(db.url, 3);
    for (const replica of replicas) cleanups.push(() => replica.stop('SIGKILL'));
    const servers = replicas.map((r) => r.url).join(',');
    const group = await admin(replicas[0]!).groups.create.mutate({ name: 'Fleet' });
    const key = (await admin(replicas[0]!).provisioningKeys.get.query({ groupId: group.id })).key as string;

    // Seven agents, each starting at a random replica: one replica holds at least three of them.
    const agents = await Promise.all(
      Array.from({ length: 7 }, async (_, i) => {
        const stateDir = await tempDir('ce-agent-');
        const proc = runAgent(['--server', servers, '--key', key, '--name', `agent-${i}`], stateDir);
        return { proc, stateDir, name: `agent-${i}`, server: '', connectorId: '' };
      }),
    );
    for (const agent of agents) {
      const status = await waitForAgentStatus(
        agent.stateDir,
        `${agent.name} connected`,
        (s) => s.state === 'connected',
        AGENT_START_MS,
      );
      agent.server = status.server ?? '';
      agent.connectorId = status.connectorId ?? '';
    }
    const victim = replicas
      .map((replica) => ({ replica, held: agents.filter((a) => a.server === replica.url) }))
      .sort((x, y) => y.held.length - x.held.length)[0]!;
    const survivors = replicas.filter((r) => r !== victim.replica);
    const [revokedBefore, revokedWhileDead, ...movers] = victim.held;
    expect(movers.length).toBeGreaterThan(0);
    const stayers = agents.filter((a) => a.server !== victim.replica.url);
    // A session whose agent never comes back: only the reaping can stop it counting as connected.
    const abandoned = (await enrollSim(victim.replica.url, key, 'abandoned')).enrolled!;
    const session = connectSim(victim.replica.url, abandoned);
    await session.waitFor('ready');
    // Known to the survivors before the kill (a replica announces new sessions in batches, up to
    // 50 ms late): a session younger than that when its replica dies was never theirs to reap.
    for (const survivor of survivors) await waitConnected(admin(survivor), 'abandoned', 10_000);

    // Revoked through a survivor before the kill: the agent exits 4 with its identity wiped. A copy
    // of that identity is kept to present again once the replica is dead.
    const kept = await tempDir('ce-agent-');
    await copyFile(join(revokedBefore!.stateDir, 'identity.json'), join(kept, 'identity.json'));
    await admin(survivors[0]!).connectors.revoke.mutate({ connectorId: revokedBefore!.connectorId });
    expect((await revokedBefore!.proc.exited).code).toBe(EXIT.REVOKED);
    expect(await readIdentity(revokedBefore!.stateDir)).toBeNull();

    // Frozen, so its revoke lands while its replica is dead and before it could reconnect anywhere.
    revokedWhileDead!.proc.kill('SIGSTOP');
    const killedAt = Date.now();
    victim.replica.kill('SIGKILL');
    await victim.replica.exited;
    await admin(survivors[1]!).connectors.revoke.mutate({ connectorId: revokedWhileDead!.connectorId });
    revokedWhileDead!.proc.kill('SIGCONT');

    // Every other agent of the dead replica is on a survivor, at its first retry.
    for (const mover of movers) {
      const status = await waitForAgentStatus(
        mover.stateDir,
        `${mover.name} connected to a survivor`,
        (s) => s.state === 'connected' && s.server !== victim.replica.url,
        20_000,
      );
      expect(survivors.map((s) => s.url)).toContain(status.server);
      // One retry (its notices all name the delay chosen for it), then connected to a survivor.
      const afterKill = logLines(mover.proc).filter((line) => Date.parse(line.time) >= killedAt);
      const connected = afterKill.findIndex((line) => line.msg.startsWith('connected to'));
      expect(afterKill[connected]?.msg).toBe(`connected to ${status.server}`);
      const delaysMs = afterKill.slice(0, connected).flatMap((line) => {
        const delay = / in ([\d.]+) s$/.exec(line.msg);
        return delay ? [Number(delay[1]) * 1000] : [];
      });
      expect(new Set(delaysMs).size).toBe(1);
      // Logged with one decimal: a delay of 999 ms reads "1.0 s".
      expect(delaysMs[0]).toBeLessThanOrEqual(FIRST_RETRY_MAX_MS);
    }
    for (const stayer of stayers) {
      expect(await readIdentity(stayer.stateDir)).not.toBeNull();
      expect(stayer.proc.exit()).toBeNull();
    }

    // Revoked while its replica was dead: refused by the survivor it reached, wiped, never connected again.
    expect((await revokedWhileDead!.proc.exited).code).toBe(EXIT.REVOKED);
    expect(await readIdentity(revokedWhileDead!.stateDir)).toBeNull();
    expect(
      logLines(revokedWhileDead!.proc).filter((line) => line.msg.startsWith('connected to')),
    ).toHaveLength(1);
    // Its refused handshake told the host, which counts as the confirmation.
    await expect
      .poll(
        async () =>
          (await admin(survivors[0]!).connectors.get.query({ connectorId: revokedWhileDead!.connectorId }))
            .termination?.state,
        { timeout: 10_000 },
      )
      .toBe('confirmed');

    // Revoked before the kill: its identity, presented again to the survivors, is refused for good.
    const again = runAgent(['--server', servers], kept);
    expect((await again.exited).code).toBe(EXIT.REVOKED);
    expect(await readIdentity(kept)).toBeNull();

    // The abandoned session stops counting as connected once the dead replica's last heartbeat is
    // DEAD_AFTER_MS old; polled no longer than that after the kill, plus time for the polling.
    // Each survivor decides on its own (its last sign of the dead replica may be a few ms apart).
    const bound = killedAt + DEAD_AFTER_MS + 3000;
    for (const survivor of survivors) {
      let shown = 'connected';
      for (let i = 0; i < 400 && Date.now() < bound; i++) {
        shown = (await admin(survivor).connectors.get.query({ connectorId: abandoned.connectorId }))
          .connection;
        if (shown !== 'connected') break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(shown).not.toBe('connected');
    }
    const goneAfterMs = Date.now() - killedAt;
    // Both survivors agree on who is connected: every live agent, nothing of the dead replica's.
    const live = [...movers, ...stayers].map((a) => a.name).sort();
    for (const survivor of survivors) {
      const listed = await admin(survivor).connectors.list.query({ connection: 'connected', limit: 100 });
      expect(listed.items.map((c) => c.name).sort()).toEqual(live);
    }
    console.info(`abandoned session shown as gone ${goneAfterMs} ms after the kill`);
  });
});
