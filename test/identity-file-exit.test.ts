import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AgentConfig } from '../agent/config.js';
import { createLogger } from '../agent/log.js';
import { runAgent } from '../agent/run.js';
import { EXIT } from '../agent/session.js';
import { tempDir } from './helpers/server.js';

describe('an identity.json the agent cannot use', () => {
  it('a directory in its place (a container volume mounted from a host file not made yet) stops the agent with exit 2, which the unit does not restart, saying so: it was exit 1, restarted every 15 s for ever', async () => {
    const stateDir = await tempDir('ce-identity-dir-');
    await mkdir(join(stateDir, 'identity.json'));
    const lines: string[] = [];
    const config: AgentConfig = {
      // Nothing listens there: the agent must stop before it sends anything.
      servers: ['http://127.0.0.1:9'],
      provisioningKey: null,
      keyFileProblem: null,
      keyExposure: null,
      stateDir,
      name: null,
      caPem: null,
      allowInsecure: false,
      allowServerChange: false,
      logFormat: 'text',
    };
    try {
      const code = await runAgent(
        config,
        createLogger('text', (line) => lines.push(line)),
        new AbortController().signal,
      );
      expect(code, lines.join('\n')).toBe(EXIT.USAGE);
      expect(lines.join('\n')).toContain(`${join(stateDir, 'identity.json')} is a directory`);
      const status = JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as { state: string };
      expect(status.state).toBe('misconfigured');
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
