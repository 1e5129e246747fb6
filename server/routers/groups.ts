import {
  emptyInput,
  groupCreateInput,
  groupDeleteInput,
  groupRefInput,
  groupUpdateInput,
} from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';
import { statusToggles } from './status-toggles.js';

export const groupsRouter = router({
  create: adminProcedure
    .input(groupCreateInput)
    .mutation(({ ctx, input }) => ctx.services.groups.create(input, ctx.meta)),
  list: adminProcedure.input(emptyInput).query(({ ctx }) => ctx.services.groups.list()),
  get: adminProcedure.input(groupRefInput).query(({ ctx, input }) => ctx.services.groups.get(input.groupId)),
  update: adminProcedure
    .input(groupUpdateInput)
    .mutation(({ ctx, input }) => ctx.services.groups.update(input, ctx.meta)),
  ...statusToggles(groupRefInput, (ctx, input, status) =>
    ctx.services.groups.setStatus(input.groupId, status, ctx.meta),
  ),
  delete: adminProcedure
    .input(groupDeleteInput)
    .mutation(({ ctx, input }) =>
      ctx.services.groups.delete(
        input.groupId,
        { force: input.force ?? false, expectedConnectors: input.expectedConnectors },
        ctx.meta,
      ),
    ),
  nextSteps: adminProcedure.input(emptyInput).query(({ ctx }) => ctx.services.groups.nextSteps()),
});
