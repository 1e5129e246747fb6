/**
 * Whether the host of a revoked or deleted connector learnt it, in words, e.g. "revoked; the host
 * confirmed it at 2026-12-02 12:03:04 UTC from 10.0.0.7"; null when there is nothing to say (not revoked).
 */
export function terminationWords(
  t: { state: 'confirmed' | 'pending'; confirmedAt: string | null; confirmedFrom: string | null } | null,
  verb: 'revoked' | 'deleted' = 'revoked',
  /** How the time reads: UTC to the second by default (the CLI); the console gives its own format. */
  timeWords: (iso: string) => string = utcWords,
): string | null {
  if (!t) return null;
  if (t.state === 'pending' || !t.confirmedAt)
    return `${verb}; not yet confirmed by the host (it was offline, or did not answer in time)`;
  return `${verb}; the host confirmed it at ${timeWords(t.confirmedAt)} from ${t.confirmedFrom ?? 'an unknown address'}`;
}

const utcWords = (iso: string) => `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
