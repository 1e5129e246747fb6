import { apiKeyCreateInput, apiKeyDeleteInput, emptyInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const apiKeysRouter = router({
  list: adminProcedure.input(emptyInput).query(({ ctx }) => ctx.services.apiKeys.list()),
  create: adminProcedure
    .input(apiKeyCreateInput)
    .mutation(({ ctx, input }) => ctx.services.apiKeys.create(input, ctx.meta)),
  delete: adminProcedure
    .input(apiKeyDeleteInput)
    .mutation(({ ctx, input }) =>
      ctx.services.apiKeys.delete(input.id, { force: input.force ?? false }, ctx.meta),
    ),
});
