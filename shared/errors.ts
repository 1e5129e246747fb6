/**
 * The one table of error reasons. Every coded failure the API returns carries one of these as
 * `error.data.reason`; the server maps each to its tRPC code (and so its HTTP status) from here, and
 * clients print `message` and `hint`. Tests keep this table, the README and docs/reference.md in step.
 */
export const ERROR_REASONS = {
  KEY_INVALID: {
    code: 'UNAUTHORIZED',
    message: 'The provisioning key is not valid.',
    hint: 'Copy the current key of the group with `groups key GROUP` and try again.',
  },
  KEY_EXPIRED: {
    code: 'UNAUTHORIZED',
    message: 'The provisioning key has expired.',
    hint: 'Ask an admin to run `groups regenerate-key GROUP` and use the new key.',
  },
  KEY_EXHAUSTED: {
    code: 'UNAUTHORIZED',
    message: 'The provisioning key has been used as many times as it allows.',
    hint: 'Ask an admin to run `groups regenerate-key GROUP` (with --max-uses N for another limited key) and use the new key.',
  },
  KEY_SUPERSEDED: {
    code: 'UNAUTHORIZED',
    message: 'The provisioning key was replaced by a newer key.',
    hint: 'Use the group’s current key (`groups key GROUP`).',
  },
  GROUP_DISABLED: {
    code: 'FORBIDDEN',
    message: 'The connector group is disabled.',
    hint: 'Enable the group with `groups enable GROUP` first.',
  },
  GROUP_NOT_FOUND: {
    code: 'NOT_FOUND',
    message: 'No such connector group.',
    hint: 'List the groups with `groups list`.',
  },
  GROUP_NOT_EMPTY: {
    code: 'PRECONDITION_FAILED',
    message: 'The group still has connectors.',
    hint: 'Delete its connectors first, or pass --force to end their sessions and delete them too.',
  },
  NAME_TAKEN: {
    code: 'CONFLICT',
    message: 'That name is already in use.',
    hint: 'Choose another name.',
  },
  CONNECTOR_NOT_FOUND: {
    code: 'NOT_FOUND',
    message: 'No such connector.',
    hint: 'List the connectors with `connectors list`.',
  },
  CONNECTOR_REVOKED: {
    code: 'FORBIDDEN',
    message: 'The connector has been revoked.',
    hint: 'A revoked connector cannot come back: enroll the host again with a current key.',
  },
  IDENTITY_INVALID: {
    code: 'UNAUTHORIZED',
    message: 'The connector identity is not valid.',
    hint: 'Enroll the host again with a current provisioning key.',
  },
  IDENTITY_UNKNOWN_SIGNER: {
    code: 'UNAUTHORIZED',
    message: 'The connector identity was signed by a key this server has never had.',
    hint: 'The identity is another deployment’s, or this server lost its signing keys (a new data dir; a replica started without its --database-url): point the agent at its own server, or start this one on its data. The agent keeps its identity and retries.',
  },
  IDENTITY_EXPIRED: {
    code: 'UNAUTHORIZED',
    message: 'The connector identity has expired.',
    hint: 'Enroll the host again with a current provisioning key.',
  },
  PROOF_INVALID: {
    code: 'UNAUTHORIZED',
    message: 'The proof of possession is missing, invalid, stale or replayed.',
    hint: "Give the agent the server's public URL (its --public-url) as --server, and let proxies pass the upgrade's response headers unchanged; an older agent also needs a host clock within 5 minutes of the server's.",
  },
  RATE_LIMITED: {
    code: 'TOO_MANY_REQUESTS',
    message: 'Too many attempts.',
    hint: 'Wait for the time given in retryAfterSeconds, then try again.',
  },
  ADMIN_KEY_INVALID: {
    code: 'UNAUTHORIZED',
    message: 'A valid admin API key is required.',
    hint: 'Pass `Authorization: Bearer cak_…` (CLI: CONNECTOR_ADMIN_KEY or --admin-key-file).',
  },
  SCOPE_FORBIDDEN: {
    code: 'FORBIDDEN',
    message: 'This API key’s scope does not allow that.',
    hint: 'Use an API key with the admin scope.',
  },
  PROVISIONING_KEY_NOT_DELETABLE: {
    code: 'FORBIDDEN',
    message: 'A provisioning key cannot be deleted; every group always has one.',
    hint: 'Regenerate it with `groups regenerate-key GROUP` or delete the group.',
  },
  API_KEY_NOT_FOUND: {
    code: 'NOT_FOUND',
    message: 'No such API key.',
    hint: 'List the API keys with `api-keys list`.',
  },
  API_KEY_IN_USE: {
    code: 'PRECONDITION_FAILED',
    message: 'That is the API key making this call; deleting it locks you out at once.',
    hint: 'Delete it with another admin key, or pass --force (force: true) if that is what you mean. With no admin key left, restarting the server writes a new bootstrap key to <data-dir>/admin.key.',
  },
  SIGNING_KEY_NOT_FOUND: {
    code: 'NOT_FOUND',
    message: 'No such signing key.',
    hint: 'List the signing keys and their kids with `signing-keys list`.',
  },
  SIGNING_KEY_ACTIVE: {
    code: 'PRECONDITION_FAILED',
    message: 'The active signing key cannot be retired: it signs every new identity.',
    hint: 'Run `signing-keys rotate` first; once the new key is active, retire this one.',
  },
  SIGNING_KEY_IN_USE: {
    code: 'PRECONDITION_FAILED',
    message: 'Connectors still hold current identities signed by this key.',
    hint: 'Wait until `signing-keys list` shows 0 identities for it (connected agents get a new identity within the rotation spread after activation), or pass --force: agents still holding one must then enroll again.',
  },
  VALIDATION_FAILED: {
    code: 'BAD_REQUEST',
    message: 'The request is not valid.',
    hint: 'See error.data.issues for the fields at fault.',
  },
  BAD_REQUEST: {
    code: 'BAD_REQUEST',
    message: 'The request could not be read.',
    hint: 'Send the input as JSON: `?input=<url-encoded JSON>` for a query, a JSON body with `content-type: application/json` for a mutation; one call per request (no batching).',
  },
  PROCEDURE_NOT_FOUND: {
    code: 'NOT_FOUND',
    message: 'No such procedure.',
    hint: 'Check the procedure name (e.g. `groups.list`); docs/reference.md lists them all.',
  },
  METHOD_NOT_ALLOWED: {
    code: 'METHOD_NOT_SUPPORTED',
    message: 'Wrong HTTP method for this procedure.',
    hint: 'Queries (list, get, counts, …) are GET with `?input=`; mutations are POST with a JSON body.',
  },
  PAYLOAD_TOO_LARGE: {
    code: 'PAYLOAD_TOO_LARGE',
    message: 'The request body is too large.',
    hint: 'Send less: the server takes request bodies of up to 64 KiB.',
  },
  BACKUP_UNSUPPORTED: {
    code: 'PRECONDITION_FAILED',
    message:
      'This server keeps its state in PostgreSQL (--database-url): a connector-server backup would miss the audit log and could not be restored into the database.',
    hint: 'Use `pg_dump` for the database, and keep a copy of the --secret-file apart from it (README: "Back up and restore replicas").',
  },
  STORE_UNAVAILABLE: {
    code: 'INTERNAL_SERVER_ERROR',
    message: 'The server could not save the change; nothing was changed.',
    hint: 'Check the server’s storage and its logs: its data directory (disk space, permissions), or with --database-url its PostgreSQL database (reachable, the user’s privileges).',
  },
  AUDIT_NOT_WRITTEN: {
    code: 'INTERNAL_SERVER_ERROR',
    message:
      'The change was saved, but its audit event could not be written yet: the server holds it in memory and writes it once the audit log takes writes again.',
    hint: 'Do not redo the change. Check the server’s storage and its logs: its data directory (disk space), or with --database-url its PostgreSQL database; the log says `audit log written again` once the held events are in.',
  },
  REVOKE_NOT_SAVED: {
    code: 'INTERNAL_SERVER_ERROR',
    message:
      'The connector was cut off and its agent told it is revoked, but the revocation could not be saved.',
    hint: 'Fix the server’s storage (its data directory: disk space, permissions; or with --database-url its PostgreSQL database), then retry the revoke: until one succeeds, a server restart would let the connector back in.',
  },
  DELETE_NOT_SAVED: {
    code: 'INTERNAL_SERVER_ERROR',
    message:
      'The connector was cut off and its agent told it is deleted, but the deletion could not be saved.',
    hint: 'Fix the server’s storage (its data directory: disk space, permissions; or with --database-url its PostgreSQL database), then retry the delete: until one succeeds, a server restart would let the connector back in.',
  },
  INTERNAL_ERROR: {
    code: 'INTERNAL_SERVER_ERROR',
    message: 'Unexpected server error.',
    hint: 'See the server logs.',
  },
} as const satisfies Record<string, { code: TrpcErrorCode; message: string; hint: string }>;

/** The tRPC error codes this project uses (a subset of TRPC_ERROR_CODE_KEY, restated so shared/ needs no server import). */
export type TrpcErrorCode =
  | 'BAD_REQUEST'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'METHOD_NOT_SUPPORTED'
  | 'CONFLICT'
  | 'PRECONDITION_FAILED'
  | 'PAYLOAD_TOO_LARGE'
  | 'TOO_MANY_REQUESTS'
  | 'INTERNAL_SERVER_ERROR';

export type ErrorReason = keyof typeof ERROR_REASONS;

export const ALL_REASONS = Object.keys(ERROR_REASONS) as ErrorReason[];

export function isErrorReason(value: unknown): value is ErrorReason {
  return typeof value === 'string' && Object.hasOwn(ERROR_REASONS, value);
}

/** A failure whose cause is known and coded; services throw it, one place maps it to tRPC. */
export class DomainError extends Error {
  override readonly name = 'DomainError';
  constructor(
    readonly reason: ErrorReason,
    message: string = ERROR_REASONS[reason].message,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}
