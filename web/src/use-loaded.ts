import { useCallback, useEffect, useState } from 'react';
import { errorText } from './api.js';

/**
 * What a page shows from the API: loaded once, and again on `refresh()`. A failed load keeps what
 * was shown and sets `error` (the reason in words); the next good one clears it. `load` must be
 * stable (useCallback) or the page reloads on every render.
 */
export function useLoaded<T>(load: () => Promise<T>): {
  data: T | null;
  error: string | null;
  refresh: () => Promise<void>;
} {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(async () => {
    try {
      setData(await load());
      setError(null);
    } catch (failure) {
      setError(errorText(failure));
    }
  }, [load]);
  useEffect(() => {
    void refresh();
  }, [refresh]);
  return { data, error, refresh };
}
