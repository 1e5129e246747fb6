import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../server/clock.js';
import { spawnAgent, waitConnected } from './helpers/agents.js';
import { startTestServer, tempDir } from './helpers/server.js';

const MINUTE = 60_000;

describe("a host whose clock is off the server's", () => {
  it.each([
    ['10 minutes behind', 10 * MINUTE, /this host's clock is 10m behind the server's/],
    ['3 hours ahead of', -3 * 60 * MINUTE, /this host's clock is 3h ahead of the server's/],
  ])(
    'a host %s the server enrolls, connects and stays connected, and says once what to fix',
    async (_, serverAhead, said) => {
      // The server's clock stands where the host's would be right, so the host's real one is off it.
      const srv = await startTestServer({ clock: new ManualClock(Date.now() + serverAhead) });
      await using _srv = srv;
      const group = await srv.admin.groups.create.mutate({ name: 'Skewed' });
      const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const stateDir = await tempDir('ce-clock-');
      const agent = spawnAgent(['--server', srv.url, '--key', key, '--name', 'drifter'], stateDir);
      const connector = await waitConnected(srv.admin, 'drifter');
      await agent.waitForOutput(said);
      expect(agent.output()).toMatch(/NTP/);
      expect(agent.output().match(/this host's clock is/g)).toHaveLength(1);
      // A restarted agent signs its first proof the same way.
      agent.kill('SIGTERM');
      expect((await agent.exited).code).toBe(0);
      const rerun = spawnAgent(['--server', srv.url], stateDir);
      await rerun.waitForOutput(/connected to http/);
      await rerun.waitForOutput(said);
      expect((await srv.admin.connectors.get.query({ connectorId: connector.id })).connection).toBe(
        'connected',
      );
      rerun.kill('SIGTERM');
      expect((await rerun.exited).code).toBe(0);
      expect(rerun.output()).not.toMatch(/PROOF_INVALID|refused/);
      await rm(stateDir, { recursive: true, force: true });
    },
  );
});
