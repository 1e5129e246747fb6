import { initTRPC, TRPCError } from '@trpc/server';
import { ZodError } from 'zod';
import { DomainError, ERROR_REASONS, type ErrorReason, isErrorReason } from '../shared/errors.js';
import type { Context } from './context.js';
import { authenticateAdmin } from './services/admin-auth.js';

/** The reason a tRPC error carries when it did not come from a DomainError. */
function reasonFor(error: TRPCError): ErrorReason {
  const cause = error.cause;
  if (cause instanceof DomainError) return cause.reason;
  if (cause instanceof ZodError) return 'VALIDATION_FAILED';
  if (isErrorReason(error.message)) return error.message;
  switch (error.code) {
    case 'TOO_MANY_REQUESTS':
      return 'RATE_LIMITED';
    case 'UNAUTHORIZED':
      return 'ADMIN_KEY_INVALID';
    case 'NOT_FOUND':
      // A DomainError's NOT_FOUND has its own reason (above): this is the framework's, a path it does not know.
      return 'PROCEDURE_NOT_FOUND';
    case 'METHOD_NOT_SUPPORTED':
      return 'METHOD_NOT_ALLOWED';
    case 'PAYLOAD_TOO_LARGE':
      return 'PAYLOAD_TOO_LARGE';
    case 'INTERNAL_SERVER_ERROR':
    case 'NOT_IMPLEMENTED':
    case 'BAD_GATEWAY':
    case 'SERVICE_UNAVAILABLE':
    case 'GATEWAY_TIMEOUT':
      return 'INTERNAL_ERROR';
    default:
      // Every other client error the framework raises (unparsable JSON, a content type it cannot
      // read, batching) is a request it could not read: its input never reached validation.
      return 'BAD_REQUEST';
  }
}

const t = initTRPC.context<Context>().create({
  isDev: false,
  errorFormatter({ shape, error }) {
    const reason = reasonFor(error);
    const cause = error.cause;
    const internal = reason === 'INTERNAL_ERROR';
    return {
      ...shape,
      // Unexpected failures say nothing of their internals; the log has the details.
      message: internal
        ? ERROR_REASONS.INTERNAL_ERROR.message
        : cause instanceof ZodError
          ? `Invalid input: ${cause.issues
              .slice(0, 5)
              .map((i) => `${i.path.join('.') || '(input)'}: ${i.message}`)
              .join('; ')}`
          : shape.message,
      data: {
        code: shape.data.code,
        httpStatus: shape.data.httpStatus,
        path: shape.data.path,
        reason,
        hint: ERROR_REASONS[reason].hint,
        ...(cause instanceof ZodError
          ? { issues: cause.issues.slice(0, 20).map((i) => ({ path: i.path.join('.'), message: i.message })) }
          : {}),
        ...(cause instanceof DomainError ? cause.details : {}),
      },
    };
  },
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;

/** Turns a DomainError thrown below into the tRPC error its reason maps to: the one place that does it. */
const mapDomainErrors = t.middleware(async ({ next }) => {
  const result = await next();
  if (!result.ok && result.error.cause instanceof DomainError) {
    const { reason, message } = result.error.cause;
    throw new TRPCError({ code: ERROR_REASONS[reason].code, message, cause: result.error.cause });
  }
  return result;
});

export const publicProcedure = t.procedure.use(mapDomainErrors);

/** How long a refused admin call waits for its `admin.refused` record before it answers anyway. */
const REFUSAL_AUDIT_WAIT_MS = 1000;

/**
 * Needs a valid admin API key; a `read` key may call queries only. Every mutation an admin tries is
 * audited: successes by the service (with what changed), refusals here. So is every call without a
 * valid key, coalesced, and past a few per minute from one address answered RATE_LIMITED, since
 * anyone can make those. With replicas it first reads the change feed (authenticateCurrent), so the
 * call sees every change committed before it began, whichever replica made it.
 */
export const adminProcedure = publicProcedure.use(async function isAdmin({ ctx, type, path, next }) {
  // A stranger can try keys at will: limited per address, audited coalesced (see authenticateAdmin).
  const principal = await authenticateAdmin(ctx.services, ctx.bearerToken, ctx.remoteAddress, path);
  ctx.adminAuthenticated?.();
  const meta = {
    actor: { kind: 'admin' as const, apiKeyId: principal.apiKeyId },
    remoteAddress: ctx.remoteAddress,
  };
  // The refusal is what the caller must hear: an audit log that cannot take the record (the same
  // database outage that refused the call, most often) must not answer in its place. A revoke
  // refused REVOKE_NOT_SAVED says which sessions it ended; STORE_UNAVAILABLE would hide that.
  // Nor may it hold the answer: a stalled database holds the write until the connection gives up,
  // which kept a change refused after 10 s unanswered for 22 s. Waited for a moment (in the usual
  // case it lands in that time, and a caller reading the audit log next finds it), then let go.
  const auditRefusal = (reason: ErrorReason) => {
    const recorded = ctx.services.audit
      .record({ type: 'admin.refused', ...meta, outcome: 'refused', reason, details: { path } })
      .catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, REFUSAL_AUDIT_WAIT_MS);
    });
    return Promise.race([recorded, waited]).finally(() => clearTimeout(timer));
  };
  if (type === 'mutation' && principal.scope !== 'admin') {
    await auditRefusal('SCOPE_FORBIDDEN');
    throw new DomainError('SCOPE_FORBIDDEN');
  }
  const result = await next({ ctx: { principal, meta } });
  if (!result.ok && type === 'mutation') {
    const cause = result.error.cause;
    await auditRefusal(cause instanceof DomainError ? cause.reason : reasonFor(result.error));
  }
  return result;
});

/**
 * Needs an agent session that a revoke or delete has just ended and whose acknowledgement the
 * server waits for (see TerminationReceipts): `agentProcedure` refuses such a session, yet it may
 * still say it heard.
 */
export const endingAgentProcedure = publicProcedure.use(function isEndingAgent({ ctx, next }) {
  if (!ctx.agent) throw new DomainError(ctx.agentRefusal ?? 'IDENTITY_INVALID');
  ctx.hub.requireEnding(ctx.agent);
  return next({ ctx: { agent: ctx.agent } });
});

/** Needs an authenticated agent session that is still live, of a usable connector (websocket only; see the session hub). */
export const agentProcedure = publicProcedure.use(function isAgent({ ctx, next }) {
  if (!ctx.agent) throw new DomainError(ctx.agentRefusal ?? 'IDENTITY_INVALID');
  // Checked on every call, not only at the handshake: a revoke or delete since then ends it.
  ctx.hub.requireLive(ctx.agent);
  return next({ ctx: { agent: ctx.agent } });
});
