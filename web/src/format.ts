/**
 * A time as people read it, in their locale and zone, with the zone named (`Dec 19, 2026, 11:27 AM
 * GMT+9`): the CLI and the logs say UTC, and a time copied between them without its zone was hours
 * off. `—` for none.
 */
export function formatTime(iso: string | null, { seconds = false } = {}): string {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: 'numeric',
    minute: '2-digit',
    ...(seconds ? { second: '2-digit' } : {}),
    timeZoneName: 'short',
  });
}

/** A time to the second, in the reader's locale (as the audit page shows them). */
export const atSecond = (iso: string) => formatTime(iso, { seconds: true });

/** `in 13 days`, `in 5 hours`, `2 minutes ago`: how far a time is from now. */
export function relativeTime(iso: string, now = Date.now()): string {
  const ms = new Date(iso).getTime() - now;
  const units: [Intl.RelativeTimeFormatUnit, number][] = [
    ['day', 86_400_000],
    ['hour', 3_600_000],
    ['minute', 60_000],
  ];
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  for (const [unit, size] of units) {
    if (Math.abs(ms) >= size) return format.format(Math.round(ms / size), unit);
  }
  return format.format(Math.trunc(ms / 1000), 'second');
}
