import { readdir, readFile } from 'node:fs/promises';
import { collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/**
 * How long one count of open file descriptors is reused. Counting means listing /proc/self/fd,
 * which took ~20 ms at 19,500 sockets (measured in the renewal benchmark): prom-client's own
 * `process_open_fds` does it synchronously on every scrape, blocking the event loop that long.
 * Here it is listed off the event loop (fs.promises) and at most once per this interval however
 * often /metrics is scraped.
 */
export const OPEN_FDS_MAX_AGE_MS = 5000;

let processRegistry: Registry | null = null;

/**
 * The process's own metrics (prom-client's defaults: CPU, resident memory, heap, event-loop lag, GC,
 * file descriptors and their limit), in one registry per process. They describe the process, not a
 * server, so several servers in one process (tests) share them; collecting them once also means no
 * event-loop monitor or GC observer per server, which prom-client gives no way to stop.
 */
export function processMetrics(): Registry {
  if (processRegistry) return processRegistry;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  if (registry.getSingleMetric('process_open_fds')) {
    registry.removeSingleMetric('process_open_fds');
    const count = cachedOpenFdCount();
    new Gauge({
      name: 'process_open_fds',
      help: `Number of open file descriptors (counted at most every ${OPEN_FDS_MAX_AGE_MS / 1000} s).`,
      registers: [registry],
      async collect() {
        const open = await count();
        if (open !== null) this.set(open);
      },
    });
  }
  processRegistry = registry;
  return registry;
}

/** Counts /proc/self/fd off the event loop, sharing one count between scrapes for OPEN_FDS_MAX_AGE_MS. */
function cachedOpenFdCount(): () => Promise<number | null> {
  let counting: Promise<number | null> | null = null;
  let countedAt = Number.NEGATIVE_INFINITY;
  return () => {
    if (!counting || performance.now() - countedAt > OPEN_FDS_MAX_AGE_MS) {
      countedAt = performance.now();
      // Less the descriptor readdir itself held open while listing.
      counting = readdir('/proc/self/fd').then(
        (entries) => entries.length - 1,
        () => null,
      );
    }
    return counting;
  };
}

/**
 * The process's soft limit on open files (RLIMIT_NOFILE), from /proc/self/limits: Node has no
 * getrlimit. Null where there is no such file (not Linux) or no limit.
 */
export async function openFileLimit(): Promise<number | null> {
  try {
    const limits = await readFile('/proc/self/limits', 'utf8');
    const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    const value = Number(soft);
    return Number.isSafeInteger(value) && value > 0 ? value : null;
  } catch {
    return null;
  }
}
