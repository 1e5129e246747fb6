import { groupRefInput, keyRegenerateInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const provisioningKeysRouter = router({
  /**
   * The group's current key. Reading the secret is an admin action: it is enough to enroll hosts,
   * so a read-scoped key gets the key's details with `key: null` (`keyMasked` shows which key it is).
   */
  get: adminProcedure.input(groupRefInput).query(({ ctx, input }) => {
    const view = ctx.services.provisioningKeys.get(input.groupId);
    return ctx.principal.scope === 'admin' ? view : { ...view, key: null };
  }),
  regenerate: adminProcedure
    .input(keyRegenerateInput)
    .mutation(({ ctx, input }) =>
      ctx.services.provisioningKeys.regenerate(
        input.groupId,
        { maxUses: input.maxUses, ttlMs: input.ttl },
        ctx.meta,
      ),
    ),
});
