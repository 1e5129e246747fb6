import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { IdentityKeeper } from '../agent/identity-keeper.js';
import { IdentityStore, type SavedIdentity } from '../agent/identity-store.js';
import { eventually } from './helpers/agents.js';
import { tempDir } from './helpers/server.js';

describe('the identity keeper', () => {
  it('a check that throws is said and the next one runs: it never ends the agent (an unhandled rejection would)', async () => {
    const dir = await tempDir('ce-keeper-');
    const real = new IdentityStore(dir);
    let loads = 0;
    // A store that fails in a way nobody planned for (a bug, a file system gone strange).
    const store = Object.assign(Object.create(real) as IdentityStore, {
      load: () => {
        loads++;
        throw new TypeError('unplanned');
      },
    });
    const errors: string[] = [];
    const logger = { info() {}, warn() {}, error: (message: string) => void errors.push(message) };
    const keeper = new IdentityKeeper({
      store,
      logger,
      current: () => ({}) as SavedIdentity,
      checkMs: 30,
      settleMs: 10,
    });
    keeper.start();
    try {
      await eventually('two checks', async () => loads >= 2, 5000);
      expect(errors[0]).toBe('could not check the state dir for the identity');
    } finally {
      await keeper.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
