import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { adminCommand, adminEnv, adminOptions, CliError, parseOptions } from '../server/cli/admin-common.js';

describe('admin CLI options', () => {
  it('takes its defaults from the environment it is given, as serve does without one', () => {
    expect(adminEnv({})).toEqual({
      server: 'http://127.0.0.1:7420',
      dataDir: './data',
      caFile: undefined,
      adminKey: undefined,
    });
    const env = adminEnv({
      CONNECTOR_SERVER: 'https://enroll.example:8443',
      CONNECTOR_DATA_DIR: '/srv/connector',
      CONNECTOR_CA_FILE: '/etc/ca.pem',
      CONNECTOR_ADMIN_KEY: '  cak_from_env \n',
    });
    expect(env).toEqual({
      server: 'https://enroll.example:8443',
      dataDir: '/srv/connector',
      caFile: '/etc/ca.pem',
      adminKey: 'cak_from_env',
    });
    expect(adminEnv({ CONNECTOR_ADMIN_KEY: '   ' }).adminKey).toBeUndefined();
    const command = adminCommand(new Command('probe'), 'probe', '', env);
    command.parse([], { from: 'user' });
    expect(parseOptions(adminOptions, command.opts())).toEqual({
      server: 'https://enroll.example:8443',
      dataDir: '/srv/connector',
      caFile: '/etc/ca.pem',
    });
  });

  it('turns options its schema refuses into a usage error naming the flag', () => {
    const schema = adminOptions.extend({ maxUses: adminOptions.shape.server });
    let error: unknown;
    try {
      parseOptions(schema, { server: 'http://x', dataDir: 'd', maxUses: 3 });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(2);
    expect((error as CliError).message).toMatch(/^--max-uses: /);
  });
});
