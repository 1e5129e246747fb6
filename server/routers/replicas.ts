import { emptyInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const replicasRouter = router({
  list: adminProcedure.input(emptyInput).query(({ ctx }) => ctx.services.replicas.list()),
});
