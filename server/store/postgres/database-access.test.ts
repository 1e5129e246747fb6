import { describe, expect, it } from 'vitest';
import { everyRoleWarning, malformedNotificationNotice, plaintextWarning } from './database-access.js';

describe('a database reached in clear', () => {
  it('is said for another host without sslmode, with the fix', () => {
    expect(plaintextWarning('postgres://connector:pw@db.example.com:5432/connector')).toMatch(
      /^the database URL names db\.example\.com without sslmode: the connection is not encrypted.*Add \?sslmode=verify-full/,
    );
    expect(plaintextWarning('postgres://connector:pw@[2001:db8::5]:5432/connector')).toMatch(
      /names 2001:db8::5 /,
    );
  });

  it('is not said for loopback, nor once the URL chose', () => {
    for (const url of [
      'postgres://u:p@127.0.0.1:5432/d',
      'postgres://u:p@localhost/d',
      'postgres://u:p@[::1]:5432/d',
      'postgres://u:p@db.example.com/d?sslmode=verify-full',
      'postgres://u:p@db.example.com/d?sslmode=disable',
      'postgres://u:p@db.example.com/d?ssl=true',
    ])
      expect(plaintextWarning(url), url).toBeNull();
  });

  it('never carries the password', () => {
    expect(plaintextWarning('postgres://connector:s3cret@db.example.com/connector')).not.toContain('s3cret');
  });
});

describe('the start-up and notification warnings', () => {
  it('names the database and user, quoted when they need it', () => {
    expect(everyRoleWarning('connector', 'connector')).toContain(
      'REVOKE CONNECT ON DATABASE connector FROM PUBLIC; GRANT CONNECT ON DATABASE connector TO connector;',
    );
    expect(everyRoleWarning('Fleet DB', 'ops"user')).toContain(
      'REVOKE CONNECT ON DATABASE "Fleet DB" FROM PUBLIC; GRANT CONNECT ON DATABASE "Fleet DB" TO "ops""user";',
    );
  });

  it('says dropped notifications at most once a minute, with how many since', () => {
    let now = 0;
    const said: Array<{ dropped: number }> = [];
    const notice = malformedNotificationNotice(
      (details) => said.push(details as { dropped: number }),
      () => now,
    );
    for (let i = 0; i < 1000; i++) notice('agent_sessions');
    now = 59_999;
    notice('agent_sessions');
    now = 60_000;
    notice('agent_sessions');
    expect(said.map((s) => s.dropped)).toEqual([1, 1001]);
  });
});
