import { DomainError } from '../../shared/errors.js';
import { acknowledgeInput, enrollInput, reportInput } from '../../shared/schemas.js';
import { agentProcedure, endingAgentProcedure, publicProcedure, router } from '../trpc.js';

export const agentRouter = router({
  /**
   * Unauthenticated: the provisioning key is the credential. Rate-limited by address, and failures
   * (of keys the server did not make) by address and by key id.
   */
  enroll: publicProcedure.input(enrollInput).mutation(async ({ ctx, input }) => {
    const { enrollment, limiter } = ctx.services;
    const attempt = await limiter.enrollAttempt(ctx.remoteAddress, input.provisioningKey, () =>
      enrollment.madeByThisServer(input.provisioningKey),
    );
    try {
      return await enrollment.enroll(input, ctx.remoteAddress);
    } catch (error) {
      // The server's own trouble (a full or read-only disk) is not the caller's failed attempt: a
      // fleet retrying through an outage must not come back to find itself locked out. A guess was
      // counted already.
      const ownTrouble = error instanceof DomainError && error.reason === 'STORE_UNAVAILABLE';
      if (!ownTrouble && !attempt.counted)
        await limiter.enrollFailed(ctx.remoteAddress, input.provisioningKey);
      throw error;
    }
  }),
  session: agentProcedure.subscription(({ ctx, signal }) =>
    ctx.hub.stream(ctx.agent, signal ?? new AbortController().signal),
  ),
  /**
   * A new identity for this session's connector and key, `{identityToken, identityExpiresAt}`: the
   * agent asks when about a quarter of its lifetime is left and no renewal was pushed. RATE_LIMITED
   * (with retryAfterSeconds) before half the lifetime has passed.
   */
  renew: agentProcedure.mutation(({ ctx }) => ctx.hub.renewOnRequest(ctx.agent)),
  /**
   * Sent by the agent over a session that ended with `revoked` or `deleted`, once it has wiped its
   * identity: the revoke or delete then answers `termination: confirmed`. `{ok: true}`.
   */
  acknowledge: endingAgentProcedure.input(acknowledgeInput).mutation(({ ctx, input }) => {
    ctx.hub.acknowledgeTermination(ctx.agent, input.event);
    return { ok: true as const };
  }),
  /**
   * The agent deletes its own connector (`connector-agent unenroll`): as an admin's delete, audited
   * `connector.deleted` with the agent as actor. The session then gets `deleted`, and the answer
   * `{deleted: true, termination}` waits (at most the acknowledgement bound) for the agent to say it
   * wiped its identity.
   */
  unenroll: agentProcedure.mutation(({ ctx }) =>
    ctx.services.connectors.delete(ctx.agent.connectorId, {
      actor: { kind: 'agent', connectorId: ctx.agent.connectorId },
      remoteAddress: ctx.agent.remoteAddress,
    }),
  ),
  report: agentProcedure.input(reportInput).mutation(({ ctx, input }) => {
    ctx.services.connectors.updateHost(ctx.agent.connectorId, input.host);
    return { ok: true as const };
  }),
});
