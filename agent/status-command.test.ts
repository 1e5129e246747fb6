import { describe, expect, it } from 'vitest';
import { type StatusSummary, statusLines } from './status-command.js';

/** A summary with every line `status` can print: replicas, an identity error, a last state with a detail. */
const everything: StatusSummary = {
  stateDir: '/var/lib/connector-agent',
  enrolled: true,
  identityError: 'damaged',
  connectorId: 'con_aligned',
  groupId: 'grp_aligned',
  server: 'https://a.example',
  servers: ['https://a.example', 'https://b.example'],
  enrolledAt: '2026-01-01T00:00:00.000Z',
  identityExpiresAt: '2027-01-01T00:00:00.000Z',
  running: true,
  connected: true,
  stoppedUncleanly: false,
  agent: {
    state: 'connected',
    status: 'enabled',
    connectorId: 'con_aligned',
    server: 'https://b.example',
    detail: 'group enabled',
    updatedAt: '2026-01-02T00:00:00.000Z',
    pid: 4242,
    pidStart: null,
  },
  exitCode: 0,
};

describe('status lines', () => {
  it('every value starts in one column, whatever its label ("enrolled via:" and "identity expires:" stood out)', () => {
    const lines = statusLines(everything);
    const labels = lines.map((line) => /^([a-z ]+:)/.exec(line)?.[1]);
    expect(labels).toEqual([
      'state dir:',
      'enrolled:',
      'identity:',
      'enrolled via:',
      'servers:',
      'identity expires:',
      'agent:',
      'last state:',
      'detail:',
    ]);
    const columns = new Set(lines.map((line) => /^[a-z ]+: +/.exec(line)?.[0].length));
    expect(columns.size, lines.join('\n')).toBe(1);
    expect(lines).toContain('enrolled via:     https://a.example');
    expect(lines).toContain('identity expires: 2027-01-01T00:00:00.000Z');
  });
});
