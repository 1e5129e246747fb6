import { useEffect, useState } from 'react';

/**
 * The time now, again every `everyMs`: what shows a relative time ("in 5 minutes") or a state that
 * a time decides (a key expired) re-renders with it instead of keeping the moment it was loaded.
 */
export function useNow(everyMs: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}
