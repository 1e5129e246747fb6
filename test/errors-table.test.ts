import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ALL_REASONS, ERROR_REASONS } from '../shared/errors.js';
import { repoRoot } from './helpers/processes.js';

const STATUS_BY_CODE: Record<string, number> = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_SUPPORTED: 405,
  CONFLICT: 409,
  PRECONDITION_FAILED: 412,
  PAYLOAD_TOO_LARGE: 413,
  TOO_MANY_REQUESTS: 429,
  INTERNAL_SERVER_ERROR: 500,
};

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

  it('gives each reason a message, a hint and a status in the contract’s list', () => {
    for (const [reason, entry] of Object.entries(ERROR_REASONS)) {
      expect(reason).toMatch(/^[A-Z]+(_[A-Z]+)*$/);
      expect(entry.message.length, reason).toBeGreaterThan(5);
      expect(entry.hint.length, reason).toBeGreaterThan(5);
      expect(STATUS_BY_CODE[entry.code], reason).toBeDefined();
    }
  });
});
