/**
 * The candidates a mistyped `word` most likely meant, for "did you mean …?": those equal but for
 * case first, else the nearest by edit distance within a budget that grows with the word (a third
 * of its length, at least 1, at most 3): `enrolment` finds `enrollment`, `prod` finds `Prod`, and a
 * word like none of them finds nothing rather than a guess.
 */
export function nearest(word: string, candidates: Iterable<string>, max = 3): string[] {
  const unique = [...new Set(candidates)];
  const folded = word.toLowerCase();
  const sameButCase = unique.filter((c) => c !== word && c.toLowerCase() === folded);
  if (sameButCase.length > 0) return sameButCase.slice(0, max);
  const budget = Math.min(3, Math.max(1, Math.floor(word.length / 3)));
  let best = Number.POSITIVE_INFINITY;
  let found: string[] = [];
  for (const candidate of unique) {
    // Words far apart in length cannot be close: skip them without the O(n·m) table.
    if (candidate === word || Math.abs(candidate.length - word.length) > budget) continue;
    const distance = editDistance(folded, candidate.toLowerCase());
    if (distance > budget) continue;
    if (distance < best) {
      best = distance;
      found = [candidate];
    } else if (distance === best) found.push(candidate);
  }
  return found.slice(0, max);
}

/**
 * Edit distance counting a swap of two neighbouring letters as one edit, as a typo is (`Wbe` for
 * `Web`), besides an insert, a delete or a substitution (optimal string alignment), a row at a time.
 */
function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      let cost = Math.min(
        (previous[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        cost = Math.min(cost, (before[j - 2] as number) + 1);
      row[j] = cost;
    }
    before = previous;
    previous = row;
  }
  return previous[b.length] as number;
}

/** ` did you mean "a" or "b"?`, or '' when there is nothing to suggest. */
export function didYouMean(suggestions: readonly string[]): string {
  if (suggestions.length === 0) return '';
  const quoted = suggestions.map((s) => `"${s}"`);
  return ` did you mean ${quoted.length === 1 ? quoted[0] : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}`}?`;
}
