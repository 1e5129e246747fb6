import { emptyInput, signingKeyRetireInput, signingKeyRotateInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const signingKeysRouter = router({
  list: adminProcedure.input(emptyInput).query(({ ctx }) => ctx.services.signingKeys.list()),
  rotate: adminProcedure
    .input(signingKeyRotateInput)
    .mutation(({ ctx, input }) => ctx.services.signingKeys.rotate(input ?? {}, ctx.meta)),
  retire: adminProcedure
    .input(signingKeyRetireInput)
    .mutation(({ ctx, input }) => ctx.services.signingKeys.retire(input, ctx.meta)),
});
