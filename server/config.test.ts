import { describe, expect, it } from 'vitest';
import { parseServeConfig } from './config.js';

describe('a bad serve setting is named where the operator wrote it', () => {
  it('the environment variable for a value from the environment', () => {
    expect(() =>
      parseServeConfig({}, { CONNECTOR_DATABASE_URL: 'postgres://connector:pw@db.internal:5432' }),
    ).toThrow(/^CONNECTOR_DATABASE_URL: the URL names no database: end it with \/DATABASE/);
    expect(() => parseServeConfig({}, { CONNECTOR_PORT: 'seventy' })).toThrow(/^CONNECTOR_PORT: /);
  });

  it('the flag for a value given as a flag, even when the environment has one too', () => {
    const env = { CONNECTOR_DATABASE_URL: 'postgres://connector:pw@db.internal:5432/connector' };
    expect(() => parseServeConfig({ databaseUrl: 'mysql://db.internal/connector' }, env)).toThrow(
      /^--database-url: use a postgres:\/\/ URL \(got mysql:\/\/…\)/,
    );
    expect(() => parseServeConfig({ port: 'seventy' }, { CONNECTOR_PORT: '7420' })).toThrow(/^--port: /);
  });

  it('a password whose / ? or # cut the URL short: how to write them, never the password', () => {
    for (const password of ['p/ss', 'p?ss', 'p#ss']) {
      const attempt = () =>
        parseServeConfig({ databaseUrl: `postgres://connector:${password}@db.internal:5432/connector` }, {});
      expect(attempt).toThrow(
        '--database-url: not a URL: use postgres://USER:PASSWORD@HOST:5432/DATABASE, with any / ? # @ : in the user or password percent-encoded (%2F %3F %23 %40 %3A)',
      );
      expect(attempt).not.toThrow(password);
    }
    const encoded = 'postgres://connector:p%2Fs%3Fs%23@db.internal:5432/connector';
    expect(parseServeConfig({ databaseUrl: encoded }, {}).databaseUrl).toBe(encoded);
  });

  it('an sslmode the client does not know is refused, naming the ones it does', () => {
    expect(() =>
      parseServeConfig(
        { databaseUrl: 'postgres://connector:pw@db.internal:5432/connector?sslmode=bogus' },
        {},
      ),
    ).toThrow(
      '--database-url: sslmode=bogus is not one of disable, prefer, require, verify-ca, verify-full, no-verify',
    );
    const url = 'postgres://connector:pw@db.internal:5432/connector?sslmode=verify-full';
    expect(parseServeConfig({ databaseUrl: url }, {}).databaseUrl).toBe(url);
  });

  it('a good value from the environment is taken', () => {
    const url = 'postgres://connector:pw@db.internal:5432/connector';
    expect(parseServeConfig({}, { CONNECTOR_DATABASE_URL: url }).databaseUrl).toBe(url);
  });
});

describe('a port clients could not reach', () => {
  it('one fetch and browsers refuse (6000, 10080, …) stops the start, named where it was given', () => {
    expect(() => parseServeConfig({ port: '6000' }, {})).toThrow(
      /^--port: port 6000 is one that fetch and browsers refuse to connect to .*: use another port$/,
    );
    expect(() => parseServeConfig({}, { CONNECTOR_PORT: '10080' })).toThrow(/^CONNECTOR_PORT: port 10080 /);
    // Behind a proxy the public URL's port is what clients reach: that one is checked.
    expect(() =>
      parseServeConfig({ port: '7420', publicUrl: 'https://enroll.example.com:6697' }, {}),
    ).toThrow(/^--public-url: port 6697 /);
    expect(parseServeConfig({ port: '6000', publicUrl: 'https://enroll.example.com' }, {}).port).toBe(6000);
    expect(parseServeConfig({ port: '0' }, {}).port).toBe(0);
  });
});
