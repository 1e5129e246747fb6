import { auditListInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const auditRouter = router({
  list: adminProcedure.input(auditListInput).query(({ ctx, input }) => ctx.services.audit.list(input ?? {})),
});
