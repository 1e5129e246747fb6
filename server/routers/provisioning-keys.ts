import { groupRefInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const provisioningKeysRouter = router({
  get: adminProcedure
    .input(groupRefInput)
    .query(({ ctx, input }) => ctx.services.provisioningKeys.get(input.groupId)),
  regenerate: adminProcedure
    .input(groupRefInput)
    .mutation(({ ctx, input }) => ctx.services.provisioningKeys.regenerate(input.groupId, ctx.meta)),
});
