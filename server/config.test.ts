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

  it('a good value from the environment is taken', () => {
    const url = 'postgres://connector:pw@db.internal:5432/connector';
    expect(parseServeConfig({}, { CONNECTOR_DATABASE_URL: url }).databaseUrl).toBe(url);
  });
});
