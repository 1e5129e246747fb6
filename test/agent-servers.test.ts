import { describe, expect, it } from 'vitest';
import { eventually, readIdentity, spawnAgent, waitConnected, waitForAgentStatus } from './helpers/agents.js';
import { freePort } from './helpers/processes.js';
import { startRelay } from './helpers/relay.js';
import { startTestServer, tempDir } from './helpers/server.js';

/** An agent process starts in ~2 s on an idle machine, several times that on a loaded two-core one. */
const AGENT_START_MS = 60_000;

async function setup() {
  const srv = await startTestServer();
  const group = await srv.admin.groups.create.mutate({ name: 'Replicas' });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
  return { srv, key };
}

describe('an agent given several servers (--server a,b)', () => {
  it('enrolls through whichever answers (a dead URL in the list costs a short wait) and saves the list', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const dead = `http://127.0.0.1:${await freePort()}`;
    const stateDir = await tempDir('ce-agent-');
    const agent = spawnAgent(['--server', `${dead},${srv.url}`, '--key', key, '--name', 'listed'], stateDir);
    try {
      await waitConnected(srv.admin, 'listed', AGENT_START_MS);
      const identity = (await readIdentity(stateDir)) as unknown as { server: string; servers: string[] };
      expect(identity.server).toBe(srv.url);
      expect(identity.servers).toEqual([dead, srv.url]);
      // status names them all: the one it enrolled at is not always the one it talks to.
      const status = spawnAgent(['status'], stateDir);
      await status.exited;
      expect(status.output()).toContain(`servers:          ${dead}, ${srv.url}`);
      // Its log names the one that answered.
      expect(agent.output()).toMatch(
        new RegExp(`enrolled; identity saved.*server=${srv.url.replaceAll('.', '\\.')}`),
      );
    } finally {
      agent.kill('SIGTERM');
      await agent.exited;
    }
  });

  it('passes over a server of the list that does not know the key (another deployment); KEY_INVALID is final once every server has said it', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    await using foreign = await startTestServer();
    // Six hosts, each starting at a random one of the two: ~half start at the one that does not know
    // the key, and every one of them must enroll all the same (all six starting at the right one,
    // which would hide a regression, is a 1-in-64 chance).
    const hosts = await Promise.all(
      Array.from({ length: 6 }, async (_, i) =>
        spawnAgent(
          ['--server', `${foreign.url},${srv.url}`, '--key', key, '--name', `host-${i}`],
          await tempDir('ce-agent-'),
        ),
      ),
    );
    try {
      for (const host of hosts) await host.waitForOutput(/enrolled; identity saved/, AGENT_START_MS);
      for (const host of hosts)
        if (host.output().includes('KEY_INVALID'))
          expect(host.output()).toContain(
            `${foreign.url} does not know this key (KEY_INVALID): asking the next server of the list`,
          );
      expect((await srv.admin.connectors.list.query({})).items).toHaveLength(6);
    } finally {
      for (const host of hosts) host.kill('SIGTERM');
      await Promise.all(hosts.map((host) => host.exited));
    }
    // No server of the list knows it: each is asked once, then it is final.
    const relay = await startRelay(foreign.url);
    try {
      const lost = spawnAgent(
        ['--server', `${foreign.url},${relay.url}`, '--key', key],
        await tempDir('ce-agent-'),
      );
      expect((await lost.exited).code).toBe(3);
      expect(
        lost.output().match(/does not know this key \(KEY_INVALID\): asking the next server/g),
      ).toHaveLength(1);
      expect(lost.output()).toMatch(/KEY_INVALID: .*groups key/);
    } finally {
      await relay.close();
    }
  });

  it('--allow-server-change saves the new list only once a session on it is ready: a mistyped one is never kept', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const stateDir = await tempDir('ce-agent-');
    const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'typo'], stateDir);
    await waitConnected(srv.admin, 'typo', AGENT_START_MS);
    first.kill('SIGTERM');
    await first.exited;

    const typo = `http://127.0.0.1:${await freePort()}`;
    const mistaken = spawnAgent(['--server', typo, '--allow-server-change'], stateDir);
    await mistaken.waitForOutput(/cannot connect; retrying/, AGENT_START_MS);
    mistaken.kill('SIGTERM');
    expect((await mistaken.exited).code).toBe(0);
    expect(mistaken.output()).not.toContain('the new server list is saved');
    const kept = (await readIdentity(stateDir)) as unknown as { server: string; servers?: string[] };
    expect([kept.server, kept.servers ?? null]).toEqual([srv.url, null]);
    // So the right URL needs no flag again.
    const back = spawnAgent(['--server', srv.url], stateDir);
    try {
      await waitForAgentStatus(stateDir, 'connected again', (s) => s.state === 'connected', AGENT_START_MS);
    } finally {
      back.kill('SIGTERM');
      await back.exited;
    }
  });

  it('moves its session to the next server when the one it is on goes away', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const relays = [await startRelay(srv.url), await startRelay(srv.url)];
    const stateDir = await tempDir('ce-agent-');
    const agent = spawnAgent(
      [
        '--server',
        relays[0]?.url as string,
        '--server',
        relays[1]?.url as string,
        '--key',
        key,
        '--name',
        'mover',
      ],
      stateDir,
    );
    try {
      const connector = await waitConnected(srv.admin, 'mover', AGENT_START_MS);
      const on = await eventually('the session through one relay', async () =>
        relays.find((relay) => relay.connections > 0),
      );
      const other = relays.find((relay) => relay !== on) as (typeof relays)[number];
      await on.close();
      // Back on the other relay, connected again (the first reconnect goes to the next server).
      await eventually('the session through the other relay', async () => other.connections > 0, 15_000);
      await waitForAgentStatus(
        stateDir,
        'connected again',
        (s) => s.state === 'connected' && s.server === other.url,
      );
      const after = await srv.admin.connectors.get.query({ connectorId: connector.id });
      expect(after.connection).toBe('connected');

      // Both gone: the attempts alternate between two refusals, each said once, then the count.
      const from = agent.output().length;
      await other.close();
      await eventually(
        'four failed attempts',
        async () => /still cannot connect after 4 attempts/.test(agent.output().slice(from)),
        30_000,
      );
      const outage = agent.output().slice(from);
      expect(outage.match(/cannot connect; retrying/g)).toHaveLength(2);
      for (const relay of relays)
        expect(outage).toContain(`ECONNREFUSED 127.0.0.1:${new URL(relay.url).port}`);
      expect(outage.match(/disconnected; reconnecting/g)).toHaveLength(1);
    } finally {
      agent.kill('SIGTERM');
      await agent.exited;
      for (const relay of relays) await relay.close();
    }
  });

  it('presents its identity only to servers it was issued for, unless told the deployment changed', async () => {
    const { srv, key } = await setup();
    await using _ = srv;
    const relay = await startRelay(srv.url);
    const stateDir = await tempDir('ce-agent-');
    const first = spawnAgent(['--server', srv.url, '--key', key, '--name', 'pinned'], stateDir);
    await waitConnected(srv.admin, 'pinned', AGENT_START_MS);
    first.kill('SIGTERM');
    await first.exited;

    const widened = spawnAgent(['--server', `${srv.url},${relay.url}`], stateDir);
    const refused = await widened.exited;
    expect(refused.code).toBe(2);
    expect(widened.output()).toContain(`issued by ${srv.url}, not by --server ${relay.url}`);
    expect(widened.output()).toContain('--allow-server-change');

    const allowed = spawnAgent(['--server', `${srv.url},${relay.url}`, '--allow-server-change'], stateDir);
    try {
      await waitForAgentStatus(
        stateDir,
        'connected with the new list',
        (s) => s.state === 'connected',
        AGENT_START_MS,
      );
      const identity = (await readIdentity(stateDir)) as unknown as { servers: string[] };
      expect(identity.servers).toEqual([srv.url, relay.url]);
    } finally {
      allowed.kill('SIGTERM');
      await allowed.exited;
    }
    // Now either one alone is a server it was issued for.
    const subset = spawnAgent(['--server', relay.url], stateDir);
    try {
      await waitForAgentStatus(
        stateDir,
        'connected through the relay alone',
        (s) => s.state === 'connected' && s.server === relay.url,
        AGENT_START_MS,
      );
    } finally {
      subset.kill('SIGTERM');
      await subset.exited;
      await relay.close();
    }
  });

  it('a server that refuses its proof (PROOF_INVALID: a replica told another --public-url) sends it on to the next; only every one refusing stops it (exit 2: configuration)', async () => {
    // The server knows itself by its own URL only: through a relay the proof names another one.
    const port = await freePort();
    await using srv = await startTestServer({ config: { port, publicUrl: `http://127.0.0.1:${port}` } });
    const group = await srv.admin.groups.create.mutate({ name: 'Proofs' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key as string;
    const relays = [await startRelay(srv.url), await startRelay(srv.url)];
    // Both enroll through the server's own URL (an enrollment through a relay is refused before the
    // key is used: test/proof-binding.test.ts), then are moved to lists with relays in them.
    const enrolledDir = async (name: string) => {
      const dir = await tempDir('ce-agent-');
      const first = spawnAgent(['--server', srv.url, '--key', key, '--name', name], dir);
      await waitConnected(srv.admin, name);
      first.kill('SIGTERM');
      expect((await first.exited).code).toBe(0);
      return dir;
    };
    const goodDir = await enrolledDir('moves-on');
    const badDir = await enrolledDir('nowhere');
    const good = spawnAgent(['--server', `${relays[0]!.url},${srv.url}`, '--allow-server-change'], goodDir);
    const bad = spawnAgent(
      ['--server', `${relays[0]!.url},${relays[1]!.url}`, '--allow-server-change'],
      badDir,
    );
    try {
      // Whichever it starts at, it ends on the server that takes its proof.
      await waitForAgentStatus(
        goodDir,
        'connected to the server that knows its URL',
        (st) => st.state === 'connected' && st.server === srv.url,
        AGENT_START_MS,
      );
      expect(good.output(), good.output()).not.toMatch(/ error /);
      // Both refuse: the first refusal moves it on, the second is final.
      const { code } = await bad.exited;
      expect(code).toBe(2);
      expect(bad.output()).toContain('a server refused the proof; trying the next one');
      expect(bad.output()).toMatch(/the server refused this agent's proof \(PROOF_INVALID\)/);
    } finally {
      good.kill('SIGTERM');
      bad.kill('SIGTERM');
      await Promise.all([good.exited, bad.exited]);
      for (const relay of relays) await relay.close();
    }
  });
});
