import type { ConnectorFilters } from '../route.js';
import type { Group } from '../types.js';

/**
 * How many connectors the filters match in all, when the group's counts say it: with no filter, one
 * status or one connection state (not both, and no search). Null when they do not.
 */
export function totalOf(counts: Group['counts'], filters: ConnectorFilters): number | null {
  const { status, connection, search } = filters;
  if (search || (status && connection)) return null;
  if (status) return counts[status];
  if (connection) return connection === 'never' ? counts.neverConnected : counts[connection];
  return counts.total;
}

/**
 * Which rows of how many the page shows ("51–64 of 64"), and Previous and Next when there is more
 * than one page. The total is the last row's number on the last page, else the group's count
 * (`total`) when it covers the filters and is not behind the rows shown, else "at least" one more.
 */
export function Pager({
  page,
  first,
  rows,
  more,
  total,
  onTurn,
}: {
  page: number;
  /** The number of the first row shown (51 on the second page). */
  first: number;
  rows: number;
  more: boolean;
  total: number | null;
  onTurn: (page: number) => void;
}) {
  const last = first + rows - 1;
  const of = !more ? String(last) : total !== null && total > last ? String(total) : `at least ${last + 1}`;
  return (
    <nav className="pager" aria-label="Pages">
      {(page > 1 || more) && (
        <button type="button" disabled={page === 1} onClick={() => onTurn(page - 1)}>
          Previous page
        </button>
      )}
      <span data-testid="page-range">
        {page > 1 || more ? `Page ${page}: ` : ''}
        {first}–{last} of {of}
      </span>
      {(page > 1 || more) && (
        <button type="button" disabled={!more} onClick={() => onTurn(page + 1)}>
          Next page
        </button>
      )}
    </nav>
  );
}
