import { DomainError } from '../../shared/errors.js';
import { emptyInput } from '../../shared/schemas.js';
import { adminProcedure, router } from '../trpc.js';

export const consoleRouter = router({
  /**
   * The admin console's live feed, over the websocket only (an admin's key in its connectionParams,
   * `{adminKey}`): batches `{groups, connectors, resync}` naming what changed, at most one per
   * 250 ms; `resync: true` (no ids) when more than 200 changed, and the console fetches again.
   */
  changes: adminProcedure.input(emptyInput).subscription(({ ctx, signal }) => {
    if (!ctx.consoleChanges)
      throw new DomainError(
        'METHOD_NOT_ALLOWED',
        'console.changes is served over the websocket (/trpc), with the admin key in its connectionParams: {adminKey}.',
      );
    return ctx.consoleChanges.stream(signal ?? new AbortController().signal);
  }),
});
