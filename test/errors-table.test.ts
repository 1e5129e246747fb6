import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TRPCError } from '@trpc/server';
import { getHTTPStatusCodeFromError } from '@trpc/server/http';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RATE_LIMITS } from '../server/services/rate-limit.js';
import { ALL_REASONS, ERROR_REASONS, type ErrorReason } from '../shared/errors.js';
import { enrollSim } from './helpers/agent-sim.js';
import { repoRoot } from './helpers/processes.js';
import { rawCall, startTestServer, type TestServer } from './helpers/server.js';

/** The HTTP status the server answers for a reason: tRPC's own mapping of the reason's code. */
const statusOf = (reason: ErrorReason) =>
  getHTTPStatusCodeFromError(new TRPCError({ code: ERROR_REASONS[reason].code }));

/** Verbs a hint may start a clause with: what the reader is told to do. */
const ACTION_VERBS = new Set(
  'ask check choose copy delete enable enroll fix list pass regenerate retire run see send use wait'.split(
    ' ',
  ),
);

/** Whether a hint tells its reader what to do: a clause led by a verb, a command in backticks or a --flag. */
function namesAnAction(hint: string): boolean {
  const clauseStarts = hint
    .split(/[.:;]\s+|\(/)
    .map((clause) => clause.trim().split(/\s/)[0]?.toLowerCase() ?? '');
  return clauseStarts.some((word) => ACTION_VERBS.has(word)) || /`[^`]+`|--[a-z]/.test(hint);
}

describe('the error-reason table', () => {
  it('holds every reason of the contract, and the README lists every reason of the table', async () => {
    const readme = await readFile(join(repoRoot, 'README.md'), 'utf8');
    const contractReasons = [
      'KEY_INVALID',
      'KEY_EXPIRED',
      'KEY_SUPERSEDED',
      'GROUP_DISABLED',
      'GROUP_NOT_FOUND',
      'GROUP_NOT_EMPTY',
      'NAME_TAKEN',
      'CONNECTOR_NOT_FOUND',
      'CONNECTOR_REVOKED',
      'IDENTITY_INVALID',
      'IDENTITY_EXPIRED',
      'PROOF_INVALID',
      'RATE_LIMITED',
      'ADMIN_KEY_INVALID',
      'SCOPE_FORBIDDEN',
      'PROVISIONING_KEY_NOT_DELETABLE',
      'VALIDATION_FAILED',
    ];
    for (const reason of contractReasons) expect(ALL_REASONS).toContain(reason);
    for (const reason of ALL_REASONS) expect(readme, reason).toContain(`\`${reason}\``);
  });

  it('gives each reason its own message, a sentence, and a hint that says what to do', () => {
    const messages = new Map<string, string>();
    for (const [reason, { message, hint }] of Object.entries(ERROR_REASONS)) {
      expect(reason).toMatch(/^[A-Z]+(_[A-Z]+)*$/);
      for (const text of [message, hint]) {
        // A sentence a CLI can print as it is: capitalised, ended, one line, no padding.
        expect(text, reason).toMatch(/^[A-Z`].*[.)]$/s);
        expect(text, reason).not.toMatch(/\n|^\s|\s$|\s{2}/);
      }
      expect(message.endsWith('.'), `${reason}: ${message}`).toBe(true);
      expect(namesAnAction(hint), `${reason}'s hint names no action: ${hint}`).toBe(true);
      expect(hint, reason).not.toBe(message);
      // Two reasons with one message would print the same line for different failures.
      expect(
        messages.get(message),
        `${reason} repeats the message of ${messages.get(message)}`,
      ).toBeUndefined();
      messages.set(message, reason);
    }
  });

  it('tells a hint that names an action from one that does not', () => {
    for (const hint of [
      'Choose another name.',
      'Run `groups list`.',
      'Or pass --force.',
      'A revoked one: enroll again.',
    ])
      expect(namesAnAction(hint), hint).toBe(true);
    for (const hint of ['Something went wrong.', 'The key is bad.', 'An error happened: sorry.'])
      expect(namesAnAction(hint), hint).toBe(false);
  });

  it('answers each reason it is cheap to provoke with the reason and the status its code maps to', async () => {
    await using srv = await startTestServer({
      config: { rateLimits: { ...DEFAULT_RATE_LIMITS, adminAuthFailuresPerMinute: 2 } },
    });
    const provoked = await provokeEach(srv);
    // A new reason has to be provoked here or named in NOT_PROVOKED_HERE with where it is tested.
    for (const reason of ALL_REASONS)
      expect(
        reason in provoked || reason in NOT_PROVOKED_HERE,
        `${reason}: provoke it, or say where it is tested`,
      ).toBe(true);
    for (const [reason, where] of Object.entries(NOT_PROVOKED_HERE)) {
      const files = where.match(/[\w-]+\.test\.ts/g) ?? [];
      expect(files.length, reason).toBeGreaterThan(0);
      for (const file of files)
        expect(await readFile(join(repoRoot, 'test', file), 'utf8'), file).toContain(reason);
    }
    for (const [reason, answer] of Object.entries(provoked) as Array<[ErrorReason, Answer]>) {
      expect({ reason: answer.reason, status: answer.status }, reason).toEqual({
        reason,
        status: statusOf(reason),
      });
      expect(answer.error?.data?.hint, reason).toBe(ERROR_REASONS[reason].hint);
    }
    // What tRPC maps the codes to is what the table documents (docs/reference.md lists the statuses).
    expect(statusOf('RATE_LIMITED')).toBe(429);
    expect(statusOf('METHOD_NOT_ALLOWED')).toBe(405);
  });
});

type Answer = Awaited<ReturnType<typeof rawCall>>;

/** Reasons that take a live session, a moved clock, a failing disk or a second key to provoke. */
const NOT_PROVOKED_HERE: Partial<Record<ErrorReason, string>> = {
  KEY_EXPIRED: 'key-policy.test.ts (moves the clock)',
  KEY_EXHAUSTED: 'key-policy.test.ts',
  CONNECTOR_REVOKED: 'connectors.test.ts, revocation-receipts.test.ts',
  IDENTITY_INVALID: 'session-attacks.test.ts (a websocket session)',
  IDENTITY_EXPIRED: 'identity-renewal.test.ts (moves the clock)',
  PROOF_INVALID: 'proof-binding.test.ts (a websocket session)',
  IDENTITY_UNKNOWN_SIGNER: 'session-attacks.test.ts (a websocket session) and faults.test.ts (a real agent)',
  SIGNING_KEY_ACTIVE: 'signing-key-rotation.test.ts',
  SIGNING_KEY_IN_USE: 'signing-key-rotation.test.ts',
  STORE_UNAVAILABLE: 'faults.test.ts (a failing disk)',
  AUDIT_NOT_WRITTEN: 'audit-not-written.test.ts (a database refusing audit rows)',
  BACKUP_UNSUPPORTED: 'backup-restore.test.ts (a server on PostgreSQL)',
  REVOKE_NOT_SAVED: 'unsaved-terminations.test.ts',
  DELETE_NOT_SAVED: 'unsaved-terminations.test.ts',
  INTERNAL_ERROR: 'no input provokes it: hostile-input.test.ts fuzzes for it',
};

/** One real call over HTTP per reason, as curl would make it, against a fresh server. */
async function provokeEach(srv: TestServer): Promise<Partial<Record<ErrorReason, Answer>>> {
  const key = srv.adminKey;
  const call = (path: string, input: unknown, options: Parameters<typeof rawCall>[3] = {}) =>
    rawCall(srv.url, path, input, { key, ...options });
  const group = await srv.admin.groups.create.mutate({ name: 'Errors' });
  const { key: provisioningKey, keyId: provisioningKeyId } = await srv.admin.provisioningKeys.get.query({
    groupId: group.id,
  });
  const oldKey = provisioningKey!;
  await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
  const { key: currentKey } = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
  expect((await enrollSim(srv.url, currentKey!, 'errors-host')).ok).toBe(true);
  const reader = await srv.admin.apiKeys.create.mutate({ name: 'reader', scope: 'read' });
  const disabled = await srv.admin.groups.create.mutate({ name: 'Errors Off' });
  const disabledKey = (await srv.admin.provisioningKeys.get.query({ groupId: disabled.id })).key!;
  await srv.admin.groups.disable.mutate({ groupId: disabled.id });
  const madeUpKey = `cak_${'x'.repeat(40)}`;
  // The limit is 2 admin calls without a valid key a minute: the first is refused, the third limited.
  const unauthenticated = await call('groups.list', {}, { key: madeUpKey });
  await call('groups.list', {}, { key: madeUpKey });
  const limited = await call('groups.list', {}, { key: madeUpKey });
  return {
    KEY_INVALID: await enrollSim(srv.url, `cpk_${'x'.repeat(40)}`),
    KEY_SUPERSEDED: await enrollSim(srv.url, oldKey),
    GROUP_DISABLED: await enrollSim(srv.url, disabledKey),
    GROUP_NOT_FOUND: await call('groups.get', { groupId: 'grp_0000000000000000' }),
    GROUP_NOT_EMPTY: await call('groups.delete', { groupId: group.id }),
    NAME_TAKEN: await call('groups.create', { name: 'Errors' }),
    CONNECTOR_NOT_FOUND: await call('connectors.get', { connectorId: 'con_0000000000000000' }),
    ADMIN_KEY_INVALID: unauthenticated,
    RATE_LIMITED: limited,
    SCOPE_FORBIDDEN: await call('groups.create', { name: 'Nope' }, { key: reader.key }),
    PROVISIONING_KEY_NOT_DELETABLE: await call('apiKeys.delete', { id: provisioningKeyId }),
    API_KEY_NOT_FOUND: await call('apiKeys.delete', { id: 'key_0000000000000000' }),
    API_KEY_IN_USE: await call('apiKeys.delete', { id: (await srv.admin.apiKeys.list.query())[0]!.id }),
    SIGNING_KEY_NOT_FOUND: await call('signingKeys.retire', { kid: 'x'.repeat(43) }),
    VALIDATION_FAILED: await call('groups.create', { name: 42 }),
    BAD_REQUEST: await call('groups.create', undefined, { body: '{' }),
    PROCEDURE_NOT_FOUND: await call('groups.nope', {}),
    METHOD_NOT_ALLOWED: await call('groups.create', { name: 'Via GET' }, { method: 'GET' }),
    PAYLOAD_TOO_LARGE: await call('groups.create', undefined, {
      body: JSON.stringify({ name: 'x'.repeat(70_000) }),
    }),
  };
}
