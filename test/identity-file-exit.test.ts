import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../agent/log.js';
import { runAgent } from '../agent/run.js';
import { EXIT } from '../agent/session.js';
import { agentConfig } from './helpers/agents.js';
import { tempDir } from './helpers/server.js';

/** Runs the agent on `stateDir` (nothing listens at its server) until it stops: its exit code and lines. */
async function runOn(stateDir: string): Promise<{ code: number; output: string }> {
  const lines: string[] = [];
  // Nothing listens there: the agent must stop before it sends anything.
  const config = agentConfig({ servers: ['http://127.0.0.1:9'], stateDir });
  const code = await runAgent(
    config,
    createLogger('text', (line) => lines.push(line)),
    new AbortController().signal,
  );
  return { code, output: lines.join('\n') };
}

describe('an identity.json the agent cannot use', () => {
  it('a directory in its place (a container volume mounted from a host file not made yet) stops the agent with exit 2, which the unit does not restart, saying so: it was exit 1, restarted every 15 s for ever', async () => {
    const stateDir = await tempDir('ce-identity-dir-');
    await mkdir(join(stateDir, 'identity.json'));
    try {
      const { code, output } = await runOn(stateDir);
      expect(code, output).toBe(EXIT.USAGE);
      expect(output).toContain(`${join(stateDir, 'identity.json')} is a directory`);
      const status = JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as { state: string };
      expect(status.state).toBe('misconfigured');
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('a FIFO in its place stops the agent with exit 2 at once, saying so: opening it waited for a writer for ever, with the state dir locked', async () => {
    const stateDir = await tempDir('ce-identity-fifo-');
    execFileSync('mkfifo', ['-m', '600', join(stateDir, 'identity.json')]);
    try {
      const { code, output } = await runOn(stateDir);
      expect(code, output).toBe(EXIT.USAGE);
      expect(output).toContain(`${join(stateDir, 'identity.json')} is not a regular file`);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
