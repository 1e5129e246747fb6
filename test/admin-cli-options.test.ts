import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { adminCommand, adminEnv, adminOptions, parseOptions } from '../server/cli/admin-common.js';
import { CliError } from '../server/cli/cli-error.js';
import { addFlags, flag, flagShape, wholeNumber } from '../server/cli/flags.js';

describe('admin CLI options', () => {
  it('takes its defaults from the environment it is given, as serve does without one', () => {
    expect(adminEnv({})).toEqual({
      server: 'http://127.0.0.1:7420',
      serverFromEnv: false,
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
      serverFromEnv: true,
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
      timeout: 60,
    });
  });

  it('turns options its schema refuses into a usage error naming the flag', () => {
    const schema = adminOptions.extend({ maxUses: adminOptions.shape.server });
    let error: unknown;
    try {
      parseOptions(schema, { server: 'http://x', dataDir: 'd', timeout: '60', maxUses: 3 });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(2);
    expect((error as CliError).message).toMatch(/^--max-uses: /);
  });

  it('declares a flag once: the command takes it with its default, and its schema types and checks the value', () => {
    const flags = { limit: flag('--limit <n>', 'page size', wholeNumber(1, 10), { default: '5' }) };
    const schema = z.object(flagShape(flags));
    const parse = (argv: string[]) =>
      parseOptions(schema, addFlags(new Command('probe'), flags).parse(argv, { from: 'user' }).opts());
    expect(parse([])).toEqual({ limit: 5 });
    expect(parse(['--limit', '7'])).toEqual({ limit: 7 });
    expect(() => parse(['--limit', '11'])).toThrow('--limit: "11" is not a whole number from 1 to 10');
    expect(addFlags(new Command('probe'), flags).helpInformation()).toContain('page size (default: "5")');
  });
});
