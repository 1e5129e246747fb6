/**
 * Whether the host of a revoked or deleted connector learnt it, in words, e.g. "revoked; the host
 * confirmed it at 2026-12-02T12:03:04.512Z from 10.0.0.7"; null when there is nothing to say (not revoked).
 */
export function terminationWords(
  t: { state: 'confirmed' | 'pending'; confirmedAt: string | null; confirmedFrom: string | null } | null,
  verb: 'revoked' | 'deleted' = 'revoked',
  /**
   * How the time reads: by default ISO 8601 as the API gives it, as the CLI prints every other time
   * (and `audit --since` takes it back); the console gives its own format.
   */
  timeWords: (iso: string) => string = (iso) => iso,
): string | null {
  if (!t) return null;
  if (t.state === 'pending' || !t.confirmedAt)
    return `${verb}; not yet confirmed by the host (it was offline, or did not answer in time)`;
  return `${verb}; the host confirmed it at ${timeWords(t.confirmedAt)} from ${t.confirmedFrom ?? 'an unknown address'}`;
}
