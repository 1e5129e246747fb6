import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IdentityStore } from '../agent/identity-store.js';
import { createLogger } from '../agent/log.js';
import { EXIT, runSession } from '../agent/session.js';
import { createTransport } from '../agent/transport.js';
import { hostFacts } from './helpers/agent-sim.js';
import { eventually } from './helpers/agents.js';
import {
  fakeIdentityMaker,
  type HostileScript,
  hostileServer,
  readyEvent,
} from './helpers/hostile-server.js';
import { tempDir } from './helpers/server.js';

const host = hostFacts('h');

describe('a server that takes the session but never says it is ready', () => {
  it('is hung up on once the deadline for `ready` passes, and the next server of the list is tried, one line each: it held the agent for ever', async () => {
    const closes: number[] = [];
    // Silent on its first session, ready on the next: whichever the agent starts with, it must leave
    // it for the other, and come back to the first to be let in.
    const silentFirst = (): HostileScript => ({
      onSubscribed: (session, connection) => {
        if (connection > 1) session.event(readyEvent());
        else session.socket.on('close', (code) => closes.push(code));
      },
    });
    await using a = await hostileServer(silentFirst());
    await using b = await hostileServer(silentFirst());
    const stateDir = await tempDir('ce-ready-');
    const maker = await fakeIdentityMaker();
    const identity = { ...(await maker.savedIdentity(a.url)), servers: [a.url, b.url] };
    await writeFile(join(stateDir, 'identity.json'), JSON.stringify(identity), { mode: 0o600 });
    const lines: string[] = [];
    const controller = new AbortController();
    const running = runSession({
      identity,
      store: new IdentityStore(stateDir),
      transport: createTransport(null),
      logger: createLogger('text', (line) => lines.push(line)),
      signal: controller.signal,
      hostFacts: host,
      servers: [a.url, b.url],
      readyTimeoutMs: 500,
    });
    try {
      await eventually(
        'connected after leaving both silent sessions',
        async () => lines.some((line) => line.includes('info  connected to')),
        20_000,
      ).catch((error: Error) => {
        throw new Error(
          `${error.message} (${a.connections()}+${b.connections()} connections)\n${lines.join('\n')}`,
        );
      });
      expect([a.connections(), b.connections()].sort()).toEqual([1, 2]);
      const hungUp = lines.filter((line) => line.includes('hung up, trying the next server'));
      expect(hungUp, lines.join('\n')).toHaveLength(2);
      for (const line of hungUp) expect(line).toContain('took the session but sent no ready within 0.5 s');
      expect(hungUp.join('\n')).toContain(a.url);
      expect(hungUp.join('\n')).toContain(b.url);
      expect(closes).toEqual([1000, 1000]);
    } finally {
      controller.abort();
      expect(await running).toBe(EXIT.STOPPED);
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
