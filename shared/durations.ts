import ms from 'ms';

export const DAY_MS = 86_400_000;

/** Parses `90s`, `15m`, `12h`, `14d` (and `500ms`) into milliseconds; anything else is refused. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (!/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/.test(trimmed)) {
    throw new Error(`"${text}" is not a duration: use a number and a unit, e.g. 90s, 15m, 12h, 14d`);
  }
  const value = ms(trimmed as ms.StringValue);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`"${text}" must be a positive duration`);
  return value;
}
