import type { inferProcedureBuilderResolverOptions } from '@trpc/server';
import type { z } from 'zod';
import { adminProcedure } from '../trpc.js';

type AdminContext = inferProcedureBuilderResolverOptions<typeof adminProcedure>['ctx'];

/**
 * `disable` and `enable` of one kind of record (a group, a connector): the same mutation, told which
 * status to set. `setStatus` picks the record from the input and calls its service.
 */
export function statusToggles<S extends z.ZodType, R>(
  input: S,
  setStatus: (ctx: AdminContext, input: z.output<S>, status: 'enabled' | 'disabled') => Promise<R>,
) {
  const toggle = (status: 'enabled' | 'disabled') =>
    adminProcedure
      .input(input)
      .mutation(({ ctx, input: parsed }) => setStatus(ctx, parsed as z.output<S>, status));
  return { disable: toggle('disabled'), enable: toggle('enabled') };
}
