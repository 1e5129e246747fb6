import { connectorListInput, connectorRefInput, emptyInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';
import { statusToggles } from './status-toggles.js';

export const connectorsRouter = router({
  list: adminProcedure
    .input(connectorListInput)
    .query(({ ctx, input }) => ctx.services.connectors.list(input)),
  get: adminProcedure
    .input(connectorRefInput)
    .query(({ ctx, input }) => ctx.services.connectors.get(input.connectorId)),
  counts: adminProcedure.input(emptyInput).query(({ ctx }) => ctx.services.connectors.counts()),
  ...statusToggles(connectorRefInput, (ctx, input, status) =>
    ctx.services.connectors.setStatus(input.connectorId, status, ctx.meta),
  ),
  revoke: adminProcedure
    .input(connectorRefInput)
    .mutation(({ ctx, input }) =>
      ctx.services.connectors.revoke(input.connectorId, input.reason ?? null, ctx.meta),
    ),
  delete: adminProcedure
    .input(connectorRefInput)
    .mutation(({ ctx, input }) => ctx.services.connectors.delete(input.connectorId, ctx.meta)),
});
