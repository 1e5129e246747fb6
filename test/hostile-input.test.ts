/**
 * Hostile input at the HTTP edge, sent as curl would: every procedure refuses malformed input with
 * VALIDATION_FAILED and leaves the store as it was; fuzzed input never gets an internal error; host
 * facts are bounded yet stored verbatim; bodies are capped; admin auth resists hostile headers.
 *
 * "The store is unchanged" compares the bytes of <data-dir>/store.json before and after. No waiting is
 * needed: a mutation answers only once its write is on disk. The test clock never moves, so the
 * `lastUsedAt` an authenticated call touches is rewritten with the same value (a lazy flush leaves
 * the bytes as they were); each fixture ends its set-up with a mutation so that value is on disk.
 *
 * The tests of a describe share its server, and still pass in any order (run with --sequence.shuffle):
 * each compares the store before and after itself, and what a test adds (a group of its own for each
 * fuzzed procedure, a connector enrolled with its own key pair) no other test reads.
 */
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { generateAgentKeyPair } from '../agent/proof.js';
import { ERROR_REASONS } from '../shared/errors.js';
import {
  apiKeyCreateInput,
  apiKeyDeleteInput,
  auditListInput,
  connectorListInput,
  connectorRefInput,
  emptyInput,
  enrollInput,
  groupCreateInput,
  groupDeleteInput,
  groupRefInput,
  groupUpdateInput,
  type HostFacts,
  keyRegenerateInput,
} from '../shared/schemas.js';
import { enrollSim, hostFacts } from './helpers/agent-sim.js';
import { rawCall, startTestServer, type TestServer } from './helpers/server.js';

// Generous limits: these tests send many refused enrollments from one address on purpose, and what
// they check is validation, not the rate limiter (which has its own tests).
const RELAXED_LIMITS = {
  enrollPerAddressPerMinute: 100_000,
  enrollFailuresPerAddress: 100_000,
  enrollFailuresPerKey: 100_000,
  handshakeFailuresPerAddress: 100_000,
  adminAuthFailuresPerMinute: 100_000,
  sessionsPerConnectorPerMinute: 100_000,
};

/** Reasons a well-formed request may legitimately get; anything else (INTERNAL_ERROR, …) is a server bug. */
const CLIENT_REASONS = Object.keys(ERROR_REASONS).filter(
  (reason) => reason !== 'INTERNAL_ERROR' && reason !== 'STORE_UNAVAILABLE',
);

interface Fixture {
  srv: TestServer;
  groupId: string;
  connectorId: string;
  provisioningKey: string;
  readKeyId: string;
}

/** A server holding one group, one enrolled connector and a second (read) API key, all on disk. */
async function seededServer(groupName = 'Hostile Lab'): Promise<Fixture> {
  const srv = await startTestServer({ config: { rateLimits: RELAXED_LIMITS } });
  const group = await srv.admin.groups.create.mutate({ name: groupName });
  const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
  const enrolled = await enrollSim(srv.url, key.key!, 'seed-host');
  const readKey = await srv.admin.apiKeys.create.mutate({ name: 'reader', scope: 'read' });
  // Last, a mutation: every lastUsedAt touched so far is now on disk too.
  await srv.admin.groups.update.mutate({ groupId: group.id, description: 'seeded' });
  return {
    srv,
    groupId: group.id,
    connectorId: enrolled.enrolled!.connectorId,
    provisioningKey: key.key!,
    readKeyId: readKey.id,
  };
}

/** The data file's and its journal's bytes, as latin1: equal strings mean equal bytes, and a diff stays readable. */
async function storeBytes(srv: TestServer): Promise<string> {
  const files = ['store.json', 'store.journal'];
  const parts = await Promise.all(
    files.map(async (f) => (await readFile(join(srv.dataDir, f))).toString('latin1')),
  );
  return parts.join('\n--- journal ---\n');
}

/** What an admin can observe, plus the data file itself. */
async function snapshot(srv: TestServer) {
  const [store, groups, counts, apiKeys] = await Promise.all([
    storeBytes(srv),
    srv.admin.groups.list.query({}),
    srv.admin.connectors.counts.query({}),
    srv.admin.apiKeys.list.query({}),
  ]);
  return { store, groups, counts, apiKeys };
}

async function healthz(srv: TestServer): Promise<number> {
  return (await fetch(`${srv.url}/healthz`)).status;
}

type Answer = { status: number; reason: string | undefined };
type AnswerWithData = Answer & { data?: unknown; issues?: unknown };

/**
 * Calls a procedure with raw input text (JSON or not) and chosen headers: the `?input=` of a GET for
 * a query, the body of a POST for a mutation. For what rawCall cannot express: a raw query string,
 * a content type, an odd Authorization header.
 */
async function callWithHeaders(
  srv: TestServer,
  path: string,
  type: 'query' | 'mutation',
  raw: string,
  headers: Record<string, string>,
): Promise<AnswerWithData> {
  const res =
    type === 'query'
      ? await fetch(`${srv.url}/trpc/${path}?input=${encodeURIComponent(raw)}`, { headers })
      : await fetch(`${srv.url}/trpc/${path}`, { method: 'POST', headers, body: raw });
  const body = (await res.json().catch(() => null)) as {
    result?: { data?: unknown };
    error?: { data?: { reason?: string; issues?: unknown } };
  } | null;
  return {
    status: res.status,
    reason: body?.error?.data?.reason,
    data: body?.result?.data,
    issues: body?.error?.data?.issues,
  };
}

/** Sends raw input text with the admin key, through rawCall where it can (POST bodies). */
async function sendRaw(
  srv: TestServer,
  path: string,
  type: 'query' | 'mutation',
  raw: string,
): Promise<AnswerWithData> {
  if (type === 'query') {
    return callWithHeaders(srv, path, type, raw, { authorization: `Bearer ${srv.adminKey}` });
  }
  const r = await rawCall(srv.url, path, undefined, { key: srv.adminKey, method: 'POST', body: raw });
  return { status: r.status, reason: r.reason, data: r.data, issues: r.error?.data?.issues };
}

const refusedAsInvalid = { status: 400, reason: 'VALIDATION_FAILED' };

// ---------------------------------------------------------------------------------------------------
// The procedures and the hostile values of each kind of field
// ---------------------------------------------------------------------------------------------------

type FieldKind =
  | 'groupId'
  | 'connectorId'
  | 'apiKeyId'
  | 'name'
  | 'text'
  | 'pageLimit'
  | 'auditLimit'
  | 'days'
  | 'bool'
  | 'enum'
  | 'datetime'
  | 'cursor'
  | 'auditCursor'
  | 'auditType'
  | 'keyUses'
  | 'keyTtl';

interface ProcedureSpec {
  path: string;
  type: 'query' | 'mutation';
  schema: z.ZodType;
  /** A valid input built from the fixture; each hostile case breaks exactly one thing in it. */
  valid: (f: Fixture) => Record<string, unknown>;
  fields: Record<string, { kind: FieldKind; required: boolean }>;
}

const required = (kind: FieldKind) => ({ kind, required: true });
const optional = (kind: FieldKind) => ({ kind, required: false });

const ADMIN_PROCEDURES: ProcedureSpec[] = [
  {
    path: 'groups.create',
    type: 'mutation',
    schema: groupCreateInput,
    valid: () => ({ name: 'Brand New', description: 'd', maxUses: 3, ttl: '1h' }),
    fields: {
      name: required('name'),
      description: optional('text'),
      maxUses: optional('keyUses'),
      ttl: optional('keyTtl'),
    },
  },
  { path: 'groups.list', type: 'query', schema: emptyInput, valid: () => ({}), fields: {} },
  {
    path: 'groups.get',
    type: 'query',
    schema: groupRefInput,
    valid: (f) => ({ groupId: f.groupId }),
    fields: { groupId: required('groupId') },
  },
  {
    path: 'groups.update',
    type: 'mutation',
    schema: groupUpdateInput,
    valid: (f) => ({ groupId: f.groupId, name: 'Renamed', description: 'changed' }),
    fields: { groupId: required('groupId'), name: optional('name'), description: optional('text') },
  },
  {
    path: 'groups.disable',
    type: 'mutation',
    schema: groupRefInput,
    valid: (f) => ({ groupId: f.groupId }),
    fields: { groupId: required('groupId') },
  },
  {
    path: 'groups.enable',
    type: 'mutation',
    schema: groupRefInput,
    valid: (f) => ({ groupId: f.groupId }),
    fields: { groupId: required('groupId') },
  },
  {
    path: 'groups.delete',
    type: 'mutation',
    schema: groupDeleteInput,
    valid: (f) => ({ groupId: f.groupId, force: true }),
    fields: { groupId: required('groupId'), force: optional('bool') },
  },
  { path: 'groups.nextSteps', type: 'query', schema: emptyInput, valid: () => ({}), fields: {} },
  {
    path: 'provisioningKeys.get',
    type: 'query',
    schema: groupRefInput,
    valid: (f) => ({ groupId: f.groupId }),
    fields: { groupId: required('groupId') },
  },
  {
    path: 'provisioningKeys.regenerate',
    type: 'mutation',
    schema: keyRegenerateInput,
    valid: (f) => ({ groupId: f.groupId, maxUses: 5, ttl: '2h' }),
    fields: { groupId: required('groupId'), maxUses: optional('keyUses'), ttl: optional('keyTtl') },
  },
  {
    path: 'connectors.list',
    type: 'query',
    schema: connectorListInput,
    valid: (f) => ({ groupId: f.groupId, status: 'enabled', connection: 'never', cursor: 'abc', limit: 10 }),
    fields: {
      groupId: optional('groupId'),
      status: optional('enum'),
      connection: optional('enum'),
      cursor: optional('cursor'),
      limit: optional('pageLimit'),
    },
  },
  ...(['get', 'disable', 'enable', 'revoke', 'delete'] as const).map(
    (name): ProcedureSpec => ({
      path: `connectors.${name}`,
      type: name === 'get' ? 'query' : 'mutation',
      schema: connectorRefInput,
      valid: (f) => ({ connectorId: f.connectorId, reason: 'because' }),
      fields: { connectorId: required('connectorId'), reason: optional('text') },
    }),
  ),
  { path: 'connectors.counts', type: 'query', schema: emptyInput, valid: () => ({}), fields: {} },
  { path: 'apiKeys.list', type: 'query', schema: emptyInput, valid: () => ({}), fields: {} },
  {
    path: 'apiKeys.create',
    type: 'mutation',
    schema: apiKeyCreateInput,
    valid: () => ({ name: 'ci', scope: 'read', expiresInDays: 30 }),
    fields: { name: required('name'), scope: optional('enum'), expiresInDays: optional('days') },
  },
  {
    path: 'apiKeys.delete',
    type: 'mutation',
    schema: apiKeyDeleteInput,
    valid: (f) => ({ id: f.readKeyId }),
    fields: { id: required('apiKeyId'), force: optional('bool') },
  },
  {
    path: 'audit.list',
    type: 'query',
    schema: auditListInput,
    valid: () => ({ since: '2020-01-01T00:00:00Z', limit: 10, type: 'group' }),
    fields: {
      since: optional('datetime'),
      before: optional('auditCursor'),
      limit: optional('auditLimit'),
      type: optional('auditType'),
    },
  },
];

const long = (n: number, char = 'x') => char.repeat(n);

/** Values of the wrong JSON type for any field. */
const WRONG_TYPES: Array<[string, unknown]> = [
  ['null', null],
  ['a boolean', true],
  ['an array', ['x']],
  ['an object', { value: 'x' }],
];
const NOT_A_STRING: Array<[string, unknown]> = [...WRONG_TYPES, ['a number', 42]];
const NOT_A_NUMBER: Array<[string, unknown]> = [...WRONG_TYPES, ['a numeric string', '10']];

/** Control characters a stored value could use to rewrite an admin's terminal or a log line. */
const CONTROL_STRINGS: Array<[string, string]> = [
  ['NUL', 'a\u0000b'],
  ['an ANSI escape', '\u001b[31mred\u001b[0m'],
  ['CR LF', 'line\r\nforged: entry'],
  ['U+2028', 'a\u2028b'],
  ['U+2029', 'a\u2029b'],
  ['DEL', 'a\u007fb'],
  ['C1 NEL', 'a\u0085b'],
];

function badIds(prefix: string, other: string): Array<[string, unknown]> {
  return [
    ...NOT_A_STRING,
    ['empty', ''],
    ['the prefix alone', `${prefix}_`],
    ['another prefix', `${other}_abc123`],
    ['upper case', `${prefix.toUpperCase()}_ABC123`],
    ['path traversal', `${prefix}_../../etc/passwd`],
    ['SQL', `${prefix}_a' OR '1'='1`],
    ['a trailing newline', `${prefix}_abc123\n`],
    ['a leading space', ` ${prefix}_abc123`],
    ['NUL', `${prefix}_abc\u0000`],
    ['__proto__', '__proto__'],
    ['a 41-character tail', `${prefix}_${long(41, 'a')}`],
    ['5000 characters', `${prefix}_${long(4996, 'a')}`],
  ];
}

const BAD_VALUES: Record<FieldKind, Array<[string, unknown]>> = {
  groupId: badIds('grp', 'con'),
  connectorId: badIds('con', 'grp'),
  apiKeyId: [
    ...NOT_A_STRING,
    ['empty', ''],
    ['the prefix alone', 'ak_'],
    ['no underscore', 'akabc123'],
    ['upper case', 'AK_ABC123'],
    ['path traversal', 'ak_../../etc/passwd'],
    ['a trailing newline', 'ak_abc123\n'],
    ['NUL', 'ak_abc\u0000'],
    ['__proto__', '__proto__'],
    ['a 41-character tail', `ak_${long(41, 'a')}`],
    ['5000 characters', `ak_${long(4997, 'a')}`],
  ],
  name: [
    ...NOT_A_STRING,
    ['empty', ''],
    ['blank', '   \t '],
    ['65 characters', long(65)],
    ['5000 characters', long(5000)],
    ...CONTROL_STRINGS,
  ],
  text: [...NOT_A_STRING, ['501 characters', long(501)], ['5000 characters', long(5000)], ...CONTROL_STRINGS],
  pageLimit: [...NOT_A_NUMBER, ['0', 0], ['-1', -1], ['1.5', 1.5], ['1001', 1001], ['1e308', 1e308]],
  auditLimit: [...NOT_A_NUMBER, ['0', 0], ['-1', -1], ['2.5', 2.5], ['10001', 10_001], ['-1e308', -1e308]],
  days: [
    ...NOT_A_NUMBER,
    ['0', 0],
    ['-30', -30],
    ['0.5', 0.5],
    ['3651', 3651],
    ['2^53 + 2', 2 ** 53 + 2],
    ['1e308', 1e308],
  ],
  bool: [
    ['null', null],
    ['a string', 'true'],
    ['1', 1],
    ['an array', [true]],
  ],
  enum: [
    ...NOT_A_STRING,
    ['empty', ''],
    ['upper case', 'ENABLED'],
    ['padded', 'enabled '],
    ['unknown', 'root'],
  ],
  datetime: [
    ...WRONG_TYPES,
    ['epoch ms', 1_767_225_600_000],
    ['words', 'yesterday'],
    ['month 13', '2026-13-01T00:00:00Z'],
    ['a date only', '2026-01-01'],
    ['no offset', '2026-01-01T00:00:00'],
  ],
  cursor: [
    ...NOT_A_STRING,
    ['a space', 'a b'],
    ['a slash', '../x'],
    ['201 characters', long(201)],
    ['NUL', 'a\u0000'],
  ],
  auditCursor: badIds('evt', 'con'),
  keyUses: [...NOT_A_NUMBER, ['0', 0], ['-1', -1], ['1.5', 1.5], ['1000001', 1_000_001], ['1e308', 1e308]],
  keyTtl: [
    ...NOT_A_STRING,
    ['empty', ''],
    ['no unit', '7200'],
    ['zero', '0s'],
    ['under a second', '500ms'],
    ['over a year', '366d'],
    ['words', 'two hours'],
    ['negative', '-2h'],
    ['33 characters', `${long(31, '1')}ms`],
  ],
  auditType: [
    ...NOT_A_STRING,
    ['upper case', 'Group'],
    ['a wildcard', 'group*'],
    ['a space', 'group created'],
    ['65 characters', long(65, 'a')],
  ],
};

/** JSON numbers JSON.stringify cannot write: 1e400 parses to Infinity. */
const OVERFLOWING_NUMBER_KINDS: ReadonlySet<FieldKind> = new Set([
  'pageLimit',
  'auditLimit',
  'days',
  'keyUses',
]);

/** Inputs that are not valid JSON at all. */
const NOT_JSON = ['{', '{"a":}', "{'a':1}", '{a:1}', 'undefined', 'NaN', '[1,]', '{"a":1}}', '\u0000'];

interface HostileCase {
  label: string;
  raw: string;
  /** Text that is not JSON is a request the server cannot read; JSON of the wrong shape fails validation. */
  refusedAs: 'VALIDATION_FAILED' | 'BAD_REQUEST';
}

/** Every hostile input tried against one procedure. */
function hostileCases(spec: ProcedureSpec, f: Fixture): HostileCase[] {
  const valid = spec.valid(f);
  const json = (label: string, value: unknown): HostileCase => ({
    label,
    raw: JSON.stringify(value),
    refusedAs: 'VALIDATION_FAILED',
  });
  const validJson = JSON.stringify(valid);
  const withKey = (key: string) =>
    validJson === '{}' ? `{"${key}":1}` : `${validJson.slice(0, -1)},"${key}":1}`;
  const cases: HostileCase[] = [
    json('null', null),
    json('a string', 'groups'),
    json('a number', 42),
    json('true', true),
    json('an empty array', []),
    json('the valid input wrapped in an array', [valid]),
    { label: 'an unknown extra field', raw: withKey('extra'), refusedAs: 'VALIDATION_FAILED' },
    { label: 'a __proto__ field', raw: withKey('__proto__'), refusedAs: 'VALIDATION_FAILED' },
    { label: 'a constructor field', raw: withKey('constructor'), refusedAs: 'VALIDATION_FAILED' },
    ...NOT_JSON.map((raw) => ({
      label: `not JSON: ${JSON.stringify(raw)}`,
      raw,
      refusedAs: 'BAD_REQUEST' as const,
    })),
  ];
  for (const [field, { kind, required: isRequired }] of Object.entries(spec.fields)) {
    if (isRequired) {
      const { [field]: _dropped, ...rest } = valid;
      cases.push(json(`${field} missing`, rest));
    }
    for (const [label, value] of BAD_VALUES[kind]) {
      cases.push(json(`${field} is ${label}`, { ...valid, [field]: value }));
    }
    if (OVERFLOWING_NUMBER_KINDS.has(kind)) {
      const marker = 987_654_321;
      const raw = JSON.stringify({ ...valid, [field]: marker }).replace(String(marker), '1e400');
      cases.push({ label: `${field} is 1e400 (Infinity)`, raw, refusedAs: 'VALIDATION_FAILED' });
    }
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------------
// 1. Malformed input, procedure by procedure
// ---------------------------------------------------------------------------------------------------

/** A request by `method` (fetch refuses TRACE): its status, Allow header and body. */
function withMethod(url: string, method: string, path: string) {
  return new Promise<{ status: number; allow: string | undefined; body: string }>((resolve, reject) => {
    const req = request(`${url}${path}`, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, allow: res.headers.allow, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('malformed input to every admin procedure', () => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = await seededServer();
  });
  // After each test, not in a last one: under --sequence.shuffle a last test may run first.
  afterEach(async () => {
    expect(await healthz(fixture.srv)).toBe(200);
  });
  afterAll(async () => {
    await fixture?.srv[Symbol.asyncDispose]();
  });

  it.each(ADMIN_PROCEDURES.map((spec) => [spec.path, spec] as const))(
    '%s answers 400 VALIDATION_FAILED with the issues (BAD_REQUEST for text that is not JSON) and writes nothing',
    async (_path, spec) => {
      const { srv } = fixture;
      const before = await snapshot(srv);
      const cases = hostileCases(spec, fixture);
      const answers: Array<{ label: string } & Answer & { hasIssues: boolean; storeUnchanged: boolean }> = [];
      for (const { label, raw } of cases) {
        const { status, reason, issues } = await sendRaw(srv, spec.path, spec.type, raw);
        answers.push({
          label,
          status,
          reason,
          // The hint of VALIDATION_FAILED sends the caller to error.data.issues: they must be there.
          hasIssues: Array.isArray(issues) && issues.length > 0,
          storeUnchanged: (await storeBytes(srv)) === before.store,
        });
      }
      expect(answers).toEqual(
        cases.map(({ label, refusedAs }) => ({
          label,
          status: 400,
          reason: refusedAs,
          hasIssues: refusedAs === 'VALIDATION_FAILED',
          storeUnchanged: true,
        })),
      );
      expect(await snapshot(srv)).toEqual(before);
    },
  );

  it('refuses batched calls (batching is off) with BAD_REQUEST and writes nothing', async () => {
    const { srv, groupId } = fixture;
    const before = await storeBytes(srv);
    const res = await fetch(`${srv.url}/trpc/groups.create,groups.delete,connectors.revoke?batch=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${srv.adminKey}` },
      body: JSON.stringify({
        0: { name: 'Batched' },
        1: { groupId, force: true },
        2: { connectorId: '__proto__' },
      }),
    });
    const body = (await res.json()) as { error?: { data?: { reason?: string; httpStatus?: number } } };
    expect(res.status).toBe(400);
    expect(body.error?.data).toMatchObject({ reason: 'BAD_REQUEST', httpStatus: 400 });
    expect(await storeBytes(srv)).toBe(before);
  });

  it('refuses the wrong HTTP method with METHOD_NOT_ALLOWED and unknown procedures with PROCEDURE_NOT_FOUND', async () => {
    const { srv, groupId } = fixture;
    const before = await snapshot(srv);
    const key = srv.adminKey;
    expect(
      await rawCall(srv.url, 'groups.delete', { groupId, force: true }, { key, method: 'GET' }),
    ).toMatchObject({
      status: 405,
      reason: 'METHOD_NOT_ALLOWED',
    });
    expect(await rawCall(srv.url, 'groups.list', {}, { key, method: 'POST' })).toMatchObject({
      status: 405,
      reason: 'METHOD_NOT_ALLOWED',
    });
    // Neither GET nor POST: the same answer, for any path under /trpc/ (TRACE was a 500 and an
    // error line with a stack in the log, for anyone who sent one).
    for (const method of ['TRACE', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
      const answer = await withMethod(srv.url, method, '/trpc/groups.list');
      expect(answer.status, method).toBe(405);
      expect(answer.allow).toBe('GET, HEAD, POST');
      expect(JSON.parse(answer.body).error.data.reason).toBe('METHOD_NOT_ALLOWED');
    }
    for (const path of ['groups.drop', 'groups', '__proto__.toString', 'agent.enroll.x']) {
      expect(await rawCall(srv.url, path, {}, { key, method: 'POST' }), path).toMatchObject({
        status: 404,
        reason: 'PROCEDURE_NOT_FOUND',
      });
    }
    expect(await snapshot(srv)).toEqual(before);
  });

  // curl -d sends application/x-www-form-urlencoded unless told otherwise: a misuse, not a server fault.
  // octet-stream is read (as a stream) and then fails validation; the others are not read at all.
  it.each([
    ['text/plain', 'text/plain;charset=UTF-8', 'BAD_REQUEST'],
    ['form-urlencoded (curl -d)', 'application/x-www-form-urlencoded', 'BAD_REQUEST'],
    ['an empty content type', '', 'BAD_REQUEST'],
    ['octet-stream', 'application/octet-stream', 'VALIDATION_FAILED'],
    ['multipart', 'multipart/form-data; boundary=x', 'BAD_REQUEST'],
  ])(
    'refuses a JSON body sent as %s with a client error, never INTERNAL_ERROR',
    async (_label, contentType, expected) => {
      const { srv } = fixture;
      const before = await snapshot(srv);
      const body = JSON.stringify({ name: 'Typed Wrong' });
      const { status, reason } = await callWithHeaders(srv, 'groups.create', 'mutation', body, {
        'content-type': contentType,
        authorization: `Bearer ${srv.adminKey}`,
      });
      expect(reason).toBe(expected);
      expect([400, 415]).toContain(status);
      expect(await snapshot(srv)).toEqual(before);
    },
  );
});

// ---------------------------------------------------------------------------------------------------
// 2. Property-based: arbitrary JSON as the input of every mutation and query
// ---------------------------------------------------------------------------------------------------

/** The input as the server receives it: JSON text parsed back (drops undefined, turns -0 into 0). */
const overTheWire = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

/** Well-formed strings a caller should not send: hostile text, bounds, look-alikes. */
const hostileString = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '<script>alert(1)</script>',
    "'; DROP TABLE groups; --",
    '__proto__',
    'constructor',
    '../../etc/passwd',
    '{{7*7}}',
    '%00',
    'grp_',
    'grp_ABC',
    'con_0123456789abcdef',
    'grp_0123456789abcdef',
    'ak_0123456789ab',
    `cpk_0123456789ab_${long(43, 'A')}`,
    long(65),
    long(501),
    long(3000),
    ...CONTROL_STRINGS.map(([, s]) => s),
  ),
  fc.string({ unit: 'grapheme', maxLength: 80 }),
);
const anyJson = fc.jsonValue({ maxDepth: 3 });
const hostileValue = fc.oneof(anyJson, hostileString, fc.constantFrom(-1, 0, 1.5, 1e308, 2 ** 53, -0));

/**
 * An input shaped like a procedure's own: each key holds a plausible value (`plausibleWeight` times
 * out of `plausibleWeight + 1`) or a hostile one; keys not in `requiredKeys` may be absent; one time
 * in five an extra key or two come along.
 */
function nearValid(
  fields: Record<string, fc.Arbitrary<unknown>>,
  { requiredKeys = [], plausibleWeight = 3 }: { requiredKeys?: string[]; plausibleWeight?: number } = {},
) {
  const model = Object.fromEntries(
    Object.entries(fields).map(([key, arb]) => [
      key,
      fc.oneof({ weight: plausibleWeight, arbitrary: arb }, hostileValue),
    ]),
  );
  const extra = fc.oneof(
    { weight: 4, arbitrary: fc.constant({}) },
    fc.dictionary(fc.string({ maxLength: 10 }), anyJson, { minKeys: 1, maxKeys: 2 }),
  );
  return fc
    .tuple(fc.record(model, { requiredKeys }), extra)
    .map(([record, more]): Record<string, unknown> => ({ ...record, ...more }));
}

/**
 * Sends one fuzzed input and checks the answer against what the shared schema says of it:
 * schema-invalid → 400 VALIDATION_FAILED and no write; schema-valid → success, or a coded client
 * error (4xx, a reason of the table, never INTERNAL_ERROR) and no write. Returns the answer.
 */
async function expectCodedAnswer(
  srv: TestServer,
  path: string,
  type: 'query' | 'mutation',
  schema: z.ZodType,
  input: unknown,
): Promise<AnswerWithData> {
  const before = await storeBytes(srv);
  const answer = await sendRaw(srv, path, type, JSON.stringify(input));
  const { status, reason } = answer;
  const context = `${path} ${JSON.stringify(input).slice(0, 300)} → ${JSON.stringify({ status, reason })}`;
  if (!schema.safeParse(overTheWire(input)).success) {
    expect({ status, reason }, context).toEqual(refusedAsInvalid);
    expect(await storeBytes(srv), context).toBe(before);
    return answer;
  }
  if (status === 200) return answer;
  expect(CLIENT_REASONS, context).toContain(reason);
  expect(status, context).toBeGreaterThanOrEqual(400);
  expect(status, context).toBeLessThan(500);
  expect(await storeBytes(srv), context).toBe(before);
  return answer;
}

interface OwnGroup {
  groupId: string;
  key: string;
  keyId: string;
  connectorId: string;
}

interface MutationFuzz {
  path: string;
  schema: z.ZodType;
  fields: (own: OwnGroup) => Record<string, fc.Arbitrary<unknown>>;
  requiredKeys: string[];
}

const UNKNOWN_GROUP_ID = 'grp_0000000000000000';
const UNKNOWN_CONNECTOR_ID = 'con_0000000000000000';
const someGroupId = (own: OwnGroup) => fc.constantFrom(own.groupId, UNKNOWN_GROUP_ID);

const MUTATION_FUZZ: MutationFuzz[] = [
  {
    path: 'groups.create',
    schema: groupCreateInput,
    fields: () => ({
      name: hostileString,
      description: hostileString,
      maxUses: fc.integer({ min: -10, max: 2_000_000 }),
      ttl: fc.oneof(hostileString, fc.constantFrom('2h', '0s', '366d')),
    }),
    requiredKeys: ['name'],
  },
  {
    path: 'groups.update',
    schema: groupUpdateInput,
    fields: (own) => ({ groupId: someGroupId(own), name: hostileString, description: hostileString }),
    requiredKeys: ['groupId'],
  },
  ...(['disable', 'enable'] as const).map(
    (name): MutationFuzz => ({
      path: `groups.${name}`,
      schema: groupRefInput,
      fields: (own) => ({ groupId: someGroupId(own) }),
      requiredKeys: ['groupId'],
    }),
  ),
  {
    path: 'groups.delete',
    schema: groupDeleteInput,
    fields: (own) => ({ groupId: someGroupId(own), force: fc.boolean() }),
    requiredKeys: ['groupId'],
  },
  {
    path: 'provisioningKeys.regenerate',
    schema: keyRegenerateInput,
    fields: (own) => ({
      groupId: someGroupId(own),
      maxUses: fc.integer({ min: -10, max: 2_000_000 }),
      ttl: fc.oneof(hostileString, fc.constantFrom('2h', '0s', '1s', '365d', '366d', '1.5h')),
    }),
    requiredKeys: ['groupId'],
  },
  ...(['disable', 'enable', 'revoke', 'delete'] as const).map(
    (name): MutationFuzz => ({
      path: `connectors.${name}`,
      schema: connectorRefInput,
      fields: (own) => ({
        connectorId: fc.constantFrom(own.connectorId, UNKNOWN_CONNECTOR_ID),
        reason: hostileString,
      }),
      requiredKeys: ['connectorId'],
    }),
  ),
  {
    path: 'apiKeys.create',
    schema: apiKeyCreateInput,
    fields: () => ({
      name: hostileString,
      scope: fc.constantFrom('read', 'admin'),
      expiresInDays: fc.integer({ min: -10, max: 4000 }),
    }),
    requiredKeys: ['name'],
  },
  {
    path: 'apiKeys.delete',
    schema: apiKeyDeleteInput,
    // Never the bootstrap key's id: deleting it would lock the rest of the file out.
    fields: (own) => ({ id: fc.constantFrom(own.keyId, 'ak_000000000000', 'ak_x') }),
    requiredKeys: ['id'],
  },
];

describe('fuzzed input (fast-check)', () => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = await seededServer('Fuzz');
  });
  afterAll(async () => {
    await fixture?.srv[Symbol.asyncDispose]();
  });

  /** A group with one enrolled connector that only one property touches. */
  async function ownGroup(name: string): Promise<OwnGroup> {
    const { srv } = fixture;
    const group = await srv.admin.groups.create.mutate({ name });
    const key = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const enrolled = await enrollSim(srv.url, key.key!, 'fuzz-seed');
    return {
      groupId: group.id,
      key: key.key!,
      keyId: key.keyId,
      connectorId: enrolled.enrolled!.connectorId,
    };
  }

  it.each(MUTATION_FUZZ)(
    '$path: schema-invalid → VALIDATION_FAILED, no write; valid → success or a coded client error',
    async ({ path, schema, fields, requiredKeys }) => {
      const own = await ownGroup(`Fuzz ${path}`);
      await fc.assert(
        fc.asyncProperty(fc.oneof(anyJson, nearValid(fields(own), { requiredKeys })), async (input) => {
          await expectCodedAnswer(fixture.srv, path, 'mutation', schema, input);
        }),
        { numRuns: 60 },
      );
      expect(await healthz(fixture.srv)).toBe(200);
    },
  );

  it.each(ADMIN_PROCEDURES.filter((spec) => spec.type === 'query'))(
    '$path (GET): arbitrary JSON never gets an internal error and writes nothing',
    async (spec) => {
      await fc.assert(
        fc.asyncProperty(fc.oneof(anyJson, fc.constant({})), async (input) => {
          await expectCodedAnswer(fixture.srv, spec.path, 'query', spec.schema, input);
        }),
        { numRuns: 30 },
      );
      expect(await healthz(fixture.srv)).toBe(200);
    },
  );

  it('agent.enroll: fuzzed input → VALIDATION_FAILED, a coded refusal, or a connector holding exactly what was sent', async () => {
    const { srv } = fixture;
    const own = await ownGroup('Fuzz enroll');
    const { publicJwk } = await generateAgentKeyPair();
    const h = hostFacts('fuzz-host');
    const host = nearValid(
      {
        hostname: fc.oneof(fc.constant(h.hostname), hostileString),
        os: fc.oneof(fc.constant(h.os), hostileString),
        platform: fc.constant(h.platform),
        release: fc.constant(h.release),
        arch: fc.constant(h.arch),
        cpus: fc.oneof(fc.nat(70_000), fc.double()),
        memoryBytes: fc.oneof(fc.maxSafeNat(), fc.integer()),
        ips: fc.array(fc.oneof(fc.ipV4(), fc.ipV6(), hostileString), { maxLength: 70 }),
        machineId: fc.oneof(fc.uuid(), hostileString),
      },
      { requiredKeys: Object.keys(h), plausibleWeight: 12 },
    );
    const publicKey = fc.oneof(
      { weight: 3, arbitrary: fc.constant(publicJwk) },
      nearValid(
        {
          kty: fc.constantFrom('OKP', 'EC', 'RSA'),
          crv: fc.constantFrom('Ed25519', 'X25519', 'P-256'),
          x: fc.oneof(fc.constant(publicJwk.x), fc.base64String()),
          d: fc.constant(publicJwk.x),
          alg: fc.constantFrom('EdDSA', 'none', 'RS256'),
          kid: hostileString,
        },
        { requiredKeys: ['kty', 'crv', 'x'] },
      ),
    );
    const enrollment = nearValid(
      {
        provisioningKey: fc.oneof({ weight: 4, arbitrary: fc.constant(own.key) }, hostileString),
        publicKey,
        host: fc.oneof({ weight: 3, arbitrary: fc.constant(h) }, host),
        agentVersion: fc.oneof({ weight: 3, arbitrary: fc.constant('1.0.0') }, hostileString),
        name: fc.oneof(
          { weight: 3, arbitrary: fc.string({ unit: 'grapheme', maxLength: 64 }) },
          hostileString,
        ),
      },
      { requiredKeys: ['provisioningKey', 'publicKey', 'host', 'agentVersion'], plausibleWeight: 12 },
    );
    // The same public key enrolled again is a retry of the first enrollment: answered with its
    // connector, which keeps what that first one sent.
    const firstSent = new Map<string, ReturnType<typeof enrollInput.parse>>();
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyJson, { weight: 3, arbitrary: enrollment }), async (input) => {
        const answer = await expectCodedAnswer(srv, 'agent.enroll', 'mutation', enrollInput, input);
        if (answer.status !== 200) return;
        const { connectorId } = answer.data as { connectorId: string };
        const sent = firstSent.get(connectorId) ?? enrollInput.parse(overTheWire(input));
        firstSent.set(connectorId, sent);
        const connector = await srv.admin.connectors.get.query({ connectorId });
        expect(connector.host).toEqual(sent.host);
        expect(connector.agentVersion).toBe(sent.agentVersion);
        expect(connector.name).toBe(sent.name ?? sent.host.hostname);
      }),
      { numRuns: 100 },
    );
    expect(await healthz(srv)).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------------
// 3. Hostile host facts in agent.enroll, with a valid provisioning key
// ---------------------------------------------------------------------------------------------------

describe('hostile host facts in agent.enroll (valid key)', () => {
  let fixture: Fixture;
  let publicJwk: { kty: 'OKP'; crv: 'Ed25519'; x: string };
  beforeAll(async () => {
    fixture = await seededServer('Hosts');
    publicJwk = (await generateAgentKeyPair()).publicJwk;
  });
  afterEach(async () => {
    expect(await healthz(fixture.srv)).toBe(200);
  });
  afterAll(async () => {
    await fixture?.srv[Symbol.asyncDispose]();
  });

  // The shared key pair is only ever refused; a test that enrolls brings its own, so that no
  // enrollment depends on which test enrolled with the same key before it.
  const ownPublicKey = async () => (await generateAgentKeyPair()).publicJwk;
  const enrollment = (overrides: Record<string, unknown> = {}, host: Record<string, unknown> = {}) => ({
    provisioningKey: fixture.provisioningKey,
    publicKey: publicJwk,
    host: { ...hostFacts('hostile'), ...host },
    agentVersion: '1.0.0',
    ...overrides,
  });

  const hostFieldBounds: Array<[keyof HostFacts, number]> = [
    ['hostname', 253],
    ['os', 128],
    ['platform', 64],
    ['release', 128],
    ['arch', 32],
    ['machineId', 128],
  ];

  const refused: Array<[string, () => unknown]> = [
    ...hostFieldBounds.flatMap(
      ([field, max]): Array<[string, () => unknown]> => [
        [`host.${field} of ${max + 1} characters`, () => enrollment({}, { [field]: long(max + 1) })],
        [`host.${field} of 60 000 characters`, () => enrollment({}, { [field]: long(60_000) })],
        ...CONTROL_STRINGS.map(([label, s]): [string, () => unknown] => [
          `host.${field} with ${label}`,
          () => enrollment({}, { [field]: s }),
        ]),
      ],
    ),
    ['an empty host.hostname', () => enrollment({}, { hostname: '' })],
    ['agentVersion of 65 characters', () => enrollment({ agentVersion: long(65) })],
    ['an empty agentVersion', () => enrollment({ agentVersion: '' })],
    ...CONTROL_STRINGS.map(([label, s]): [string, () => unknown] => [
      `agentVersion with ${label}`,
      () => enrollment({ agentVersion: `1.0${s}` }),
    ]),
    ['name of 65 characters', () => enrollment({ name: long(65) })],
    ['a blank name', () => enrollment({ name: '  ' })],
    ...CONTROL_STRINGS.map(([label, s]): [string, () => unknown] => [
      `name with ${label}`,
      () => enrollment({ name: s }),
    ]),
    ['an empty provisioningKey', () => enrollment({ provisioningKey: '' })],
    ['a provisioningKey of 201 characters', () => enrollment({ provisioningKey: long(201) })],
    ['65 ips', () => enrollment({}, { ips: Array.from({ length: 65 }, (_, i) => `10.0.0.${i}`) })],
    ['2000 ips', () => enrollment({}, { ips: Array.from({ length: 2000 }, () => '10.0.0.1') })],
    ...['not-an-ip', '999.1.1.1', '10.0.0.0/8', '127.0.0.1 ', '::g', 'localhost', ''].map(
      (ip): [string, () => unknown] => [
        `ips holding ${JSON.stringify(ip)}`,
        () => enrollment({}, { ips: [ip] }),
      ],
    ),
    ['ips holding a number', () => enrollment({}, { ips: [2130706433] })],
    ['ips as a string', () => enrollment({}, { ips: '127.0.0.1' })],
    ...([-1, 1.5, 65_537, '2', null, 1e308] as const).map((cpus): [string, () => unknown] => [
      `cpus ${JSON.stringify(cpus)}`,
      () => enrollment({}, { cpus }),
    ]),
    ...([-1, 0.5, 2 ** 53, '1024'] as const).map((memoryBytes): [string, () => unknown] => [
      `memoryBytes ${JSON.stringify(memoryBytes)}`,
      () => enrollment({}, { memoryBytes }),
    ]),
    ['an extra host property', () => enrollment({}, { kernelCmdline: 'quiet' })],
    ['host missing hostname', () => ({ ...enrollment(), host: { ...hostFacts(), hostname: undefined } })],
    ['host as an array', () => enrollment({ host: [hostFacts()] })],
    ['host missing', () => ({ ...enrollment(), host: undefined })],
    ['an extra top-level property', () => enrollment({ groupId: fixture.groupId })],
    ['a private JWK (d present)', () => enrollment({ publicKey: { ...publicJwk, d: publicJwk.x } })],
    ['kty EC', () => enrollment({ publicKey: { ...publicJwk, kty: 'EC' } })],
    ['kty RSA', () => enrollment({ publicKey: { ...publicJwk, kty: 'RSA' } })],
    ['crv X25519', () => enrollment({ publicKey: { ...publicJwk, crv: 'X25519' } })],
    ['crv P-256', () => enrollment({ publicKey: { ...publicJwk, crv: 'P-256' } })],
    ['alg none', () => enrollment({ publicKey: { ...publicJwk, alg: 'none' } })],
    ['use enc', () => enrollment({ publicKey: { ...publicJwk, use: 'enc' } })],
    ['an extra JWK property', () => enrollment({ publicKey: { ...publicJwk, key_ops: ['sign'] } })],
    ['x of 42 characters', () => enrollment({ publicKey: { ...publicJwk, x: publicJwk.x.slice(1) } })],
    ['x of 44 characters', () => enrollment({ publicKey: { ...publicJwk, x: `${publicJwk.x}A` } })],
    [
      'x in standard base64',
      () => enrollment({ publicKey: { ...publicJwk, x: `${publicJwk.x.slice(2)}+/` } }),
    ],
    ['x missing', () => enrollment({ publicKey: { kty: 'OKP', crv: 'Ed25519' } })],
    ['publicKey as a PEM string', () => enrollment({ publicKey: '-----BEGIN PUBLIC KEY-----' })],
    ['publicKey null', () => enrollment({ publicKey: null })],
  ];

  it.each(refused)('refuses %s with VALIDATION_FAILED and writes nothing', async (_label, build) => {
    const { srv, groupId } = fixture;
    const before = await snapshot(srv);
    const enrollmentsBefore = (await srv.admin.provisioningKeys.get.query({ groupId })).enrollments;
    const r = await rawCall(srv.url, 'agent.enroll', build());
    expect(r).toMatchObject({ ok: false, ...refusedAsInvalid });
    expect(await snapshot(srv)).toEqual(before);
    expect((await srv.admin.provisioningKeys.get.query({ groupId })).enrollments).toBe(enrollmentsBefore);
  });

  it('answers a 200-character garbage key with KEY_INVALID (not a validation error) and writes nothing', async () => {
    const { srv } = fixture;
    const before = await snapshot(srv);
    for (const provisioningKey of [
      long(200),
      `cpk_${long(12, 'a')}_${long(43, 'A')}`,
      'cpk_\u0000\u001b[2J',
    ]) {
      const r = await rawCall(srv.url, 'agent.enroll', enrollment({ provisioningKey }));
      expect(r, JSON.stringify(provisioningKey).slice(0, 30)).toMatchObject({
        status: 401,
        reason: 'KEY_INVALID',
      });
    }
    expect(await snapshot(srv)).toEqual(before);
  });

  it('accepts HTML and other printable text within bounds and gives it back verbatim', async () => {
    const { srv } = fixture;
    const script = '<script>alert(1)</script>';
    const host = {
      ...hostFacts(),
      hostname: script,
      os: `<img src=x onerror="alert('os')">`,
      release: '"; DROP TABLE connectors; --',
      // A log4j lookup and a template expression: inert text here.
      machineId: '$' + '{jndi:ldap://x}{{7*7}}',
      ips: ['::1', '10.0.0.1', 'fe80::1'],
    };
    const r = await rawCall(
      srv.url,
      'agent.enroll',
      enrollment({ host, name: `${script} 🚀 مرحبا`, agentVersion: script, publicKey: await ownPublicKey() }),
    );
    expect(r).toMatchObject({ ok: true, status: 200 });
    const connector = await srv.admin.connectors.get.query({ connectorId: r.data.connectorId });
    expect(connector).toMatchObject({ name: `${script} 🚀 مرحبا`, agentVersion: script, host });
    expect(await storeBytes(srv)).toContain(script);
  });

  it('accepts every field at its bound', async () => {
    const { srv } = fixture;
    const host: HostFacts = {
      ...hostFacts(),
      ...Object.fromEntries(hostFieldBounds.map(([field, max]) => [field, long(max, field[0])])),
      cpus: 65_536,
      memoryBytes: 2 ** 53 - 1,
      ips: Array.from({ length: 64 }, (_, i) => `10.0.${i}.1`),
    };
    const r = await rawCall(
      srv.url,
      'agent.enroll',
      enrollment({
        host,
        name: long(64, 'n'),
        agentVersion: long(64, 'v'),
        publicKey: { ...(await ownPublicKey()), kid: long(128) },
      }),
    );
    expect(r).toMatchObject({ ok: true, status: 200 });
    const connector = await srv.admin.connectors.get.query({ connectorId: r.data.connectorId });
    expect(connector).toMatchObject({ name: long(64, 'n'), host });
  });
});

// ---------------------------------------------------------------------------------------------------
// 4. Oversized bodies
// ---------------------------------------------------------------------------------------------------

/** A JSON body of exactly `bytes` bytes whose `name` is padding. */
function paddedBody(bytes: number, field = 'name'): string {
  const head = `{"${field}":"`;
  return `${head}${long(bytes - head.length - 2)}"}`;
}

describe('oversized bodies (maxBodyBytes 65536)', () => {
  let fixture: Fixture;
  beforeAll(async () => {
    fixture = await seededServer('Bodies');
  });
  afterAll(async () => {
    await fixture?.srv[Symbol.asyncDispose]();
  });

  it('reads a body of exactly 64 KiB (then refuses its content) but refuses one byte more with 413', async () => {
    const { srv } = fixture;
    const before = await snapshot(srv);
    expect(await sendRaw(srv, 'groups.create', 'mutation', paddedBody(65_536))).toMatchObject(
      refusedAsInvalid,
    );
    expect(await sendRaw(srv, 'groups.create', 'mutation', paddedBody(65_537))).toMatchObject({
      status: 413,
      reason: 'PAYLOAD_TOO_LARGE',
    });
    expect(await snapshot(srv)).toEqual(before);
  });

  it.each([
    ['70 KB', 70_000],
    ['1 MB', 1_000_000],
  ])('refuses a %s agent.enroll body with 413 and stays up', async (_label, bytes) => {
    const { srv } = fixture;
    const before = await snapshot(srv);
    const r = await rawCall(srv.url, 'agent.enroll', undefined, {
      body: paddedBody(bytes, 'provisioningKey'),
    });
    expect(r).toMatchObject({ ok: false, status: 413, reason: 'PAYLOAD_TOO_LARGE' });
    expect(await healthz(srv)).toBe(200);
    expect(await snapshot(srv)).toEqual(before);
  });

  it('refuses an oversized chunked body that announces no length', async () => {
    const { srv } = fixture;
    const before = await snapshot(srv);
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        `${srv.url}/trpc/agent.enroll`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            body += chunk;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.write('{"provisioningKey":"');
      for (let i = 0; i < 12; i++) req.write(long(8192));
      req.end('"}');
    });
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.body).error.data.reason).toBe('PAYLOAD_TOO_LARGE');
    expect(await healthz(srv)).toBe(200);
    expect(await snapshot(srv)).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------------------
// 5. Admin auth against hostile Authorization headers
// ---------------------------------------------------------------------------------------------------

describe('admin auth on hostile headers', () => {
  let fixture: Fixture & { deletedKey: string };
  beforeAll(async () => {
    const seeded = await seededServer('Auth');
    const doomed = await seeded.srv.admin.apiKeys.create.mutate({ name: 'doomed', scope: 'admin' });
    await seeded.srv.admin.apiKeys.delete.mutate({ id: doomed.id });
    fixture = { ...seeded, deletedKey: doomed.key };
  });
  afterAll(async () => {
    await fixture?.srv[Symbol.asyncDispose]();
  });

  /** Authorization header values; null sends none. */
  const hostileAuthorizations = (f: Fixture & { deletedKey: string }): Array<[string, string | null]> => {
    const admin = f.srv.adminKey;
    const secret = admin.slice(admin.lastIndexOf('_') + 1);
    const flipped = `${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`;
    return [
      ['no header', null],
      ['an empty header', ''],
      ['"Bearer" alone', 'Bearer'],
      ['Bearer garbage', 'Bearer not-a-key'],
      ['a 10 KB bearer', `Bearer ${long(10_240, 'k')}`],
      ['a cak_ key with a wrong secret', `Bearer ${admin.slice(0, admin.lastIndexOf('_') + 1)}${flipped}`],
      ['a cak_ key with an unknown id', `Bearer cak_${long(12, '0')}_${secret}`],
      ['the provisioning key', `Bearer ${f.provisioningKey}`],
      ['the provisioning key as cak_', `Bearer cak_${f.provisioningKey.slice(4)}`],
      ['a deleted admin key', `Bearer ${f.deletedKey}`],
      ['the admin key upper-cased', `Bearer ${admin.toUpperCase()}`],
      ['the admin key with trailing junk', `Bearer ${admin}junk`],
      ['the admin key and more words', `Bearer ${admin} extra`],
      ['the admin key without a scheme', admin],
      ['Basic auth with the admin key', `Basic ${Buffer.from(`admin:${admin}`).toString('base64')}`],
      ['Token scheme', `Token ${admin}`],
      ['two bearers', `Bearer not-a-key, Bearer ${admin}`],
    ];
  };

  it.each(ADMIN_PROCEDURES.map((spec) => [spec.path, spec] as const))(
    '%s refuses every hostile Authorization with 401 ADMIN_KEY_INVALID, even for a valid input',
    async (_path, spec) => {
      const { srv } = fixture;
      const before = await snapshot(srv);
      const raw = JSON.stringify(spec.valid(fixture));
      const answers: Array<{ label: string } & Answer> = [];
      for (const [label, authorization] of hostileAuthorizations(fixture)) {
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (authorization !== null) headers.authorization = authorization;
        const { status, reason } = await callWithHeaders(srv, spec.path, spec.type, raw, headers);
        answers.push({ label, status, reason });
      }
      expect(answers).toEqual(
        answers.map(({ label }) => ({ label, status: 401, reason: 'ADMIN_KEY_INVALID' })),
      );
      expect(await snapshot(srv)).toEqual(before);
    },
  );

  it('refuses the same keys through rawCall, as curl would send them', async () => {
    const { srv, provisioningKey, deletedKey } = fixture;
    const before = await snapshot(srv);
    for (const key of [undefined, 'garbage', long(10_240), provisioningKey, deletedKey]) {
      for (const [path, input] of [
        ['groups.list', {}],
        ['groups.create', { name: 'Intruder' }],
      ] as const) {
        expect(
          await rawCall(srv.url, path, input, key ? { key } : {}),
          `${path} ${key?.slice(0, 12)}`,
        ).toMatchObject({
          ok: false,
          status: 401,
          reason: 'ADMIN_KEY_INVALID',
        });
      }
    }
    expect(await snapshot(srv)).toEqual(before);
  });
});
