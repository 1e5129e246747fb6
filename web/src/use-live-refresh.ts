import { useCallback, useEffect, useRef, useState } from 'react';
import { type ChangesFeed, type ConsoleChanges, type LiveState, subscribeToChanges } from './live.js';

/** At most one refetch per this interval, however many batches arrive (a reconnect storm). */
const MIN_REFRESH_INTERVAL_MS = 500;

/** Whether a page's live updates flow, and what retries them at once (its Reconnect now). */
export interface LiveFeedState {
  state: LiveState;
  reconnectNow: () => void;
}

/**
 * Calls `refresh` when the server reports a change that `concerns` the page (always on resync), at
 * most once per MIN_REFRESH_INTERVAL_MS and never two at a time: batches that arrive meanwhile are
 * merged into the next refresh.
 */
export function useLiveRefresh(
  adminKey: string,
  refresh: () => Promise<void>,
  concerns: (batch: ConsoleChanges) => boolean = () => true,
): LiveFeedState {
  const [state, setState] = useState<LiveState>('connecting');
  const feed = useRef<ChangesFeed | null>(null);
  const latest = useRef({ refresh, concerns });
  latest.current = { refresh, concerns };

  useEffect(() => {
    // Set on unmount: the feed's own closing must not refetch for a page that is gone.
    let stopped = false;
    let pending = false;
    let running = false;
    let lastRun = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      timer = undefined;
      if (stopped || running || !pending) return;
      pending = false;
      running = true;
      lastRun = Date.now();
      await latest.current.refresh().catch(() => {});
      running = false;
      if (pending) schedule();
    };
    const schedule = () => {
      if (timer || running) return;
      timer = setTimeout(run, Math.max(0, lastRun + MIN_REFRESH_INTERVAL_MS - Date.now()));
    };
    feed.current = subscribeToChanges(
      adminKey,
      (batch) => {
        if (stopped) return;
        if (!batch.resync && !latest.current.concerns(batch)) return;
        pending = true;
        schedule();
      },
      (next) => {
        if (stopped) return;
        setState(next);
        // A closed feed may mean the key was deleted: a fetch finds out (a 401 signs out) and catches
        // up on what the feed missed meanwhile.
        if (next === 'offline' || next === 'crowded') {
          pending = true;
          schedule();
        }
      },
    );
    return () => {
      stopped = true;
      clearTimeout(timer);
      feed.current?.stop();
      feed.current = null;
    };
  }, [adminKey]);
  const reconnectNow = useCallback(() => feed.current?.reconnectNow(), []);
  return { state, reconnectNow };
}
