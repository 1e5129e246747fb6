/**
 * What text people name things with may hold. Control characters (C0, DEL, C1, the line and
 * paragraph separators) would let a stored value rewrite an admin's terminal or a log line; lone
 * surrogates are not text at all. Invisible characters (every format character, Unicode category
 * Cf: zero-width spaces and joiners, bidirectional controls, soft hyphen, word joiner, tags; the
 * fillers that render as nothing; variation selectors) would let a name look blank, or like another
 * name, in a table. That includes U+200D ZERO WIDTH JOINER, so emoji built with it are refused too.
 * Placeholders and stacks of combining marks (below) are refused for the same reason.
 */
const CONTROL = /[\p{Cc}\u2028\u2029\p{Cs}]/u;
const INVISIBLE =
  // biome-ignore lint/suspicious/noMisleadingCharacterClass: each combining mark here (CGJ, variation selectors) is matched on its own
  /[\p{Cf}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0\u{e0000}-\u{e007f}\u{e0100}-\u{e01ef}]/u;
/**
 * Characters that stand for no letter: private use (a vendor's logo on one machine, a box on the
 * next), the object replacement character, and the 66 noncharacters (U+FDD0–FDEF and the last two
 * of every plane), which Unicode promises never to assign. Unassigned code points in general are
 * not refused: which ones are depends on the Unicode version of whoever checks.
 */
const PLACEHOLDER = new RegExp(
  `[\\p{Co}\\ufffc\\ufdd0-\\ufdef${Array.from({ length: 17 }, (_, plane) => {
    const base = (plane * 0x10000 + 0xfffe).toString(16);
    return `\\u{${base}}\\u{${(plane * 0x10000 + 0xffff).toString(16)}}`;
  }).join('')}]`,
  'u',
);
/** More combining marks on one character than any script writes: a name that spills over its neighbours. */
const MAX_COMBINING_MARKS = 6;
const MARK_STACK = new RegExp(`\\p{M}{${MAX_COMBINING_MARKS + 1},}`, 'u');
const UNSAFE = new RegExp(`${CONTROL.source}|${INVISIBLE.source}|${PLACEHOLDER.source}`, 'gu');
const UNSAFE_ONE = new RegExp(UNSAFE.source, 'u');
const INVISIBLE_ALL = new RegExp(INVISIBLE.source, 'gu');

/** `U+2060`: how a code point is named in messages. */
function codePointName(char: string): string {
  return `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * Why `text` may not be stored, e.g. `contains an invisible character (U+2060)`, or null if it may.
 * With `allowInvisible` only control characters count (for text that is escaped instead).
 */
export function unsafeTextProblem(text: string, allowInvisible = false): string | null {
  const match = (allowInvisible ? CONTROL : UNSAFE_ONE).exec(text);
  if (!match) {
    const stack = allowInvisible ? null : MARK_STACK.exec(text);
    return stack
      ? `stacks ${[...stack[0]].length} combining marks on one character (at most ${MAX_COMBINING_MARKS})`
      : null;
  }
  const what = CONTROL.test(match[0])
    ? 'a control character'
    : PLACEHOLDER.test(match[0])
      ? 'a private-use or noncharacter code point'
      : 'an invisible character';
  return `contains ${what} (${codePointName(match[0])})`;
}

/** Writes each invisible character as `\u{2060}`, so that it shows; the rest is left as it is. */
export function escapeInvisible(text: string): string {
  return text.replace(INVISIBLE_ALL, escapeOne);
}

/** Writes each control or invisible character as `\u{2060}`: for showing stored text on a terminal. */
export function escapeUnsafe(text: string): string {
  return text.replace(UNSAFE, escapeOne);
}

function escapeOne(char: string): string {
  return `\\u{${char.codePointAt(0)!.toString(16).toUpperCase()}}`;
}
