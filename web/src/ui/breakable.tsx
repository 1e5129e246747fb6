import type { ReactNode } from 'react';

/** The longest run of characters a name keeps whole: past it, a run may break every so many. */
const LONGEST_RUN = 20;
const RUN = new RegExp(`[^\\s-]{${LONGEST_RUN + 1},}`, 'gu');

/**
 * Text (a name, a version a host reports) with a place to break (<wbr>) every LONGEST_RUN characters
 * of a run that has none: 64 letters in one run made its table column 64 letters wide and the table
 * wider than the window. Ordinary words are left whole; `overflow-wrap: anywhere` on the cell would
 * break them too, as the column narrowed ("Hostnam" / "e"). The text itself is unchanged (copy, find,
 * screen readers).
 */
export function Breakable({ text }: { text: string }) {
  const parts: ReactNode[] = [];
  let at = 0;
  for (const match of text.matchAll(RUN)) {
    parts.push(text.slice(at, match.index));
    const chars = Array.from(match[0]);
    for (let i = 0; i < chars.length; i += LONGEST_RUN) {
      if (i > 0) parts.push(<wbr key={`${match.index}-${i}`} />);
      parts.push(chars.slice(i, i + LONGEST_RUN).join(''));
    }
    at = match.index + match[0].length;
  }
  parts.push(text.slice(at));
  // Strings need no key; each <wbr> has its own.
  return <>{parts}</>;
}
