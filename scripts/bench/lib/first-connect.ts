import type { Harness } from '../harness.js';
import type { Child } from './procs.js';

/**
 * Asks `client` to connect each of its enrolled connectors once and close it again, a wave at a
 * time (client-proc's `firstConnect`): a connector's first session does one-off bookkeeping that the
 * steps measuring sessions must not see.
 */
export function connectEachOnce(
  h: Harness,
  client: Child,
): Promise<{ connected: number; notReady: number; durationMs: number }> {
  return client.peer.call(
    'firstConnect',
    {
      localAddress: h.freshAddress(),
      concurrency: h.plan.connectConcurrencyPerProc,
      waveSize: h.plan.quick ? 100 : 2000,
      timeoutMs: h.plan.connectTimeoutMs,
    },
    h.plan.connectTimeoutMs * 10,
  );
}
