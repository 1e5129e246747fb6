import { describe, expect, it } from 'vitest';
import { resolveStateDir, UsageError } from './config.js';

describe('resolveStateDir', () => {
  it('makes a relative --state-dir or CONNECTOR_STATE_DIR absolute, so a run elsewhere finds the same dir', () => {
    expect(resolveStateDir('state', {}, 1000)).toBe(`${process.cwd()}/state`);
    expect(resolveStateDir(undefined, { CONNECTOR_STATE_DIR: 'st' }, 1000)).toBe(`${process.cwd()}/st`);
  });

  it('root: /var/lib/connector-agent; others: XDG_STATE_HOME when absolute, else ~/.local/state', () => {
    expect(resolveStateDir(undefined, { HOME: '/root' }, 0)).toBe('/var/lib/connector-agent');
    expect(resolveStateDir(undefined, { XDG_STATE_HOME: '/srv/state', HOME: '/home/a' }, 1000)).toBe(
      '/srv/state/connector-agent',
    );
    // The XDG spec: a relative value is ignored.
    expect(resolveStateDir(undefined, { XDG_STATE_HOME: 'rel', HOME: '/home/a' }, 1000)).toBe(
      '/home/a/.local/state/connector-agent',
    );
  });

  it('refuses a home that is not a path instead of a dir relative to wherever it runs', () => {
    expect(() => resolveStateDir(undefined, { HOME: '' }, 1000)).toThrow(UsageError);
    expect(() => resolveStateDir(undefined, { HOME: '' }, 1000)).toThrow(
      'no state dir: HOME is empty; pass --state-dir DIR or set CONNECTOR_STATE_DIR',
    );
    expect(() => resolveStateDir(undefined, { HOME: 'home' }, 1000)).toThrow(
      /HOME is "home", not an absolute path/,
    );
  });
});
