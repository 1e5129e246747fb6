/** One page of a list the server pages by cursor: its rows, and where the next page starts (null: none). */
export interface CursorPage<T> {
  items: T[];
  next: string | null;
}

/** What `readPage` found: the page's rows and whether there are more after them, or the page to show instead. */
export type PageRead<T> = { items: T[]; more: boolean } | { goTo: number };

/**
 * Page `page` (from 1) of a list read by cursor. `starts[i]` is the cursor page i + 2 starts at: kept
 * from earlier reads and filled in here, so a page opened by its number alone (a link, a reload) is
 * reached by reading the pages before it. `{ goTo }` when the list has fewer pages now (rows gone
 * since, or a made-up link): the last page there is. Null when `stale()` says the answer is not wanted.
 */
export async function readPage<T>(
  page: number,
  starts: string[],
  read: (cursor: string | undefined) => Promise<CursorPage<T>>,
  stale: () => boolean,
): Promise<PageRead<T> | null> {
  while (starts.length < page - 1) {
    const before = await read(starts.at(-1));
    if (stale()) return null;
    if (before.next === null) return { goTo: starts.length + 1 };
    starts.push(before.next);
  }
  const list = await read(page > 1 ? starts[page - 2] : undefined);
  if (stale()) return null;
  if (list.items.length === 0 && page > 1) return { goTo: page - 1 };
  if (list.next !== null) starts[page - 1] = list.next;
  // The last page now: the starts kept past it are of rows gone since.
  else starts.length = page - 1;
  return { items: list.items, more: list.next !== null };
}

/**
 * Which rows of how many the page shows ("51–64 of 64"), and Previous and Next when there is more
 * than one page. The total is the last row's number on the last page, else `total` when known and
 * not behind the rows shown, else "at least" one more.
 */
export function Pager({
  page,
  first,
  rows,
  more,
  total,
  onTurn,
  labels = { previous: 'Previous page', next: 'Next page' },
}: {
  page: number;
  /** The number of the first row shown (51 on the second page). */
  first: number;
  rows: number;
  more: boolean;
  total: number | null;
  onTurn: (page: number) => void;
  /** The buttons' names. @default { previous: 'Previous page', next: 'Next page' } */
  labels?: { previous: string; next: string };
}) {
  const last = first + rows - 1;
  const of = !more ? String(last) : total !== null && total > last ? String(total) : `at least ${last + 1}`;
  return (
    <nav className="pager" aria-label="Pages">
      {(page > 1 || more) && (
        <button type="button" disabled={page === 1} onClick={() => onTurn(page - 1)}>
          {labels.previous}
        </button>
      )}
      <span data-testid="page-range">
        {page > 1 || more ? `Page ${page}: ` : ''}
        {first}–{last} of {of}
      </span>
      {(page > 1 || more) && (
        <button type="button" disabled={!more} onClick={() => onTurn(page + 1)}>
          {labels.next}
        </button>
      )}
    </nav>
  );
}
