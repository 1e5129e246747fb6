import { groupRefInput, keyRegenerateInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const provisioningKeysRouter = router({
  get: adminProcedure
    .input(groupRefInput)
    .query(({ ctx, input }) => ctx.services.provisioningKeys.get(input.groupId)),
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
