import { useCallback, useEffect, useRef, useState } from 'react';
import { errorReason, errorText } from '../api.js';
import { useConsole } from '../console-context.js';
import { type ConnectorFilters, FILTER_CHOICES, groupHref, MAX_SEARCH } from '../route.js';
import type { Connector, Group } from '../types.js';
import { LivePageHead } from '../ui/live-page-head.js';
import { Pager, readPage } from '../ui/pager.js';
import { useLiveRefresh } from '../use-live-refresh.js';
import { ConnectorDialog, type ConnectorDialogState } from './connector-dialogs.js';
import { ConnectorsTable } from './connectors-table.js';

/**
 * How many connectors the filters match in all, when the group's counts say it: with no filter, one
 * status or one connection state (not both, and no search). Null when they do not.
 */
function totalOf(counts: Group['counts'], filters: ConnectorFilters): number | null {
  const { status, connection, search } = filters;
  if (search || (status && connection)) return null;
  if (status) return counts[status];
  if (connection) return connection === 'never' ? counts.neverConnected : counts[connection];
  return counts.total;
}

/** One page of rows at a time, fetched by the server's cursor: never the whole fleet. */
export const CONNECTORS_PAGE_SIZE = 50;

/**
 * A group's connectors, filtered by status and connection on the server, a page at a time, in
 * enrollment order (oldest first: the only order `connectors.list` keeps stable from page to page).
 * The page number is in the URL; the cursor each page starts at is kept once read, and a page
 * opened from a link or a reload is reached by reading the pages before it. Refetched live when a
 * change names this group or one of the rows shown.
 */
export function ConnectorsPage({ groupId, filters }: { groupId: string; filters: ConnectorFilters }) {
  const { api, adminKey } = useConsole();
  const [group, setGroup] = useState<Group | null>(null);
  const [rows, setRows] = useState<Connector[] | null>(null);
  // The filters are the URL's (a reload or a shared link keeps them): a change of filter is a new URL.
  const { status, connection, search, page } = filters;
  // The pages' cursors belong to the filters they were read with: other filters start at page 1.
  const filterKey = `${status}/${connection}/${search}`;
  /** `starts[i]`: the cursor page i + 2 starts at, under the filters of `filterKey`. */
  const pageStarts = useRef<{ filterKey: string; starts: string[] }>({ filterKey, starts: [] });
  /** The rows shown: which page they are, and whether there are more after them. */
  const [shown, setShown] = useState<{ page: number; more: boolean } | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  /** The server does not know the group (deleted, or a wrong link): there is nothing to filter or page. */
  const [missing, setMissing] = useState(false);
  const [dialog, setDialog] = useState<ConnectorDialogState | null>(null);
  /** What came of the last action taken here ("x revoked; the host confirmed it at …"). */
  const [outcome, setOutcome] = useState<string | null>(null);
  /** With replicas: each one's URL by id, to say which holds a live session. Read when an id is new. */
  const [replicaUrls, setReplicaUrls] = useState<ReadonlyMap<string, string | null>>(new Map());
  // What refresh checks against, without making refresh (and the page's load) depend on it.
  const knownReplicas = useRef(replicaUrls);

  /** The newest refresh started: an older one's answer (another search, another page) is dropped. */
  const latest = useRef(0);
  const refresh = useCallback(async () => {
    const asked = ++latest.current;
    const query = {
      groupId,
      status: status || undefined,
      connection: connection || undefined,
      search: search || undefined,
      limit: CONNECTORS_PAGE_SIZE,
    };
    if (pageStarts.current.filterKey !== filterKey) pageStarts.current = { filterKey, starts: [] };
    const { starts } = pageStarts.current;
    const goTo = (to: number) =>
      location.replace(groupHref(groupId, { status, connection, search, page: to }));
    try {
      const [groupView, list] = await Promise.all([
        api.groups.get.query({ groupId }),
        readPage(
          page,
          starts,
          async (cursor) => {
            const { items, nextCursor } = await api.connectors.list.query({ ...query, cursor });
            return { items, next: nextCursor };
          },
          () => asked !== latest.current,
        ),
      ]);
      if (asked !== latest.current || list === null) return;
      if ('goTo' in list) return goTo(list.goTo);
      setGroup(groupView);
      setRows(list.items);
      setShown({ page, more: list.more });
      setLoadError(null);
      setMissing(false);
      if (list.items.some((c) => c.replica !== null && !knownReplicas.current.has(c.replica))) {
        const { replicas } = await api.replicas.list.query({});
        const urls = new Map(replicas.map((r) => [r.id, r.url]));
        // One gone from the list meanwhile is not asked about again at each refresh.
        for (const c of list.items) if (c.replica && !urls.has(c.replica)) urls.set(c.replica, null);
        knownReplicas.current = urls;
        setReplicaUrls(knownReplicas.current);
      }
    } catch (error) {
      if (asked !== latest.current) return;
      setLoadError(errorText(error));
      // Deleted meanwhile: nothing of it is left to show or act on.
      if (errorReason(error) === 'GROUP_NOT_FOUND') {
        setGroup(null);
        setRows(null);
        setMissing(true);
      }
    }
  }, [api, groupId, status, connection, search, page, filterKey]);

  useEffect(() => {
    void refresh();
  }, [refresh]);
  // A URL naming a filter the page does not offer (or in another order) is written as it applies.
  useEffect(() => {
    const href = groupHref(groupId, { status, connection, search, page });
    if (location.hash !== href) location.replace(href);
  }, [groupId, status, connection, search, page]);
  const live = useLiveRefresh(
    adminKey,
    refresh,
    (batch) =>
      batch.groups.includes(groupId) || batch.connectors.some((id) => rows?.some((r) => r.id === id)),
  );

  /** Applies other filters, from the first page: in place of this URL (no history entry per choice). */
  const filter = (next: Partial<ConnectorFilters>) =>
    location.replace(groupHref(groupId, { ...filters, page: 1, ...next }));
  /** Another page: the window goes back to its top, where the rows start (it stayed at the pager). */
  const turnTo = (to: number) => {
    location.replace(groupHref(groupId, { ...filters, page: to }));
    window.scrollTo(0, 0);
  };

  return (
    <>
      <p>
        <a href="#/groups">← Connector Groups</a>
      </p>
      <LivePageHead
        title={group ? `${group.name} — connectors` : 'Connectors'}
        live={live}
        onRefresh={() => void refresh()}
      />
      {group && (
        <p className="help">
          {group.counts.total} connector(s): {group.counts.connected} connected, {group.counts.enabled}{' '}
          enabled{group.status === 'disabled' ? ' (disabled with the group)' : ''}, {group.counts.disabled}{' '}
          disabled, {group.counts.revoked} revoked. Oldest enrollment first: Connection › Connected lists the
          live ones.
        </p>
      )}
      {outcome && (
        <p className="success" role="status" data-testid="connector-outcome">
          {outcome}
        </p>
      )}
      {group?.status === 'disabled' && (
        <p className="warning" role="status" data-testid="group-disabled">
          This group is disabled: its connectors are disabled with it, whatever their own status (what they
          return to when the group is enabled), and its provisioning key enrolls no host.
        </p>
      )}
      {missing && (
        <p className="warning" data-testid="group-missing">
          This server has no such group: it was deleted, or the link is wrong. See the{' '}
          <a href="#/groups">connector groups</a> there are.
        </p>
      )}
      {!missing && (
        <form className="filters" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
          <FilterSelect name="status" label="Status" value={status} onChange={filter} />
          <FilterSelect name="connection" label="Connection" value={connection} onChange={filter} />
          <SearchBox value={search} onChange={(next) => filter({ search: next })} />
        </form>
      )}
      {loadError && (
        <p className="error" role="alert">
          Could not load the connectors: {loadError}
        </p>
      )}
      {rows && (
        <ConnectorsTable
          rows={rows}
          replicaUrls={replicaUrls}
          groupDisabled={group?.status === 'disabled'}
          stale={loadError !== null}
          onAction={setDialog}
        />
      )}
      {!missing && rows && rows.length > 0 && shown && group && (
        <Pager
          page={shown.page}
          first={(shown.page - 1) * CONNECTORS_PAGE_SIZE + 1}
          rows={rows.length}
          more={shown.more}
          total={totalOf(group.counts, filters)}
          onTurn={turnTo}
        />
      )}
      {dialog && (
        <ConnectorDialog
          state={dialog}
          onClose={() => setDialog(null)}
          onChanged={async (said) => {
            setOutcome(said);
            await refresh();
          }}
        />
      )}
    </>
  );
}

/** How long typing pauses before a search is applied (one server query per pause, not per key). */
const SEARCH_PAUSE_MS = 300;

/**
 * The page's search, applied once typing pauses (or on Enter): what is typed is the box's own until
 * then, and follows the URL when that changes otherwise (back, a link).
 */
function SearchBox({ value, onChange }: { value: string; onChange: (next: string) => void }) {
  const [draft, setDraft] = useState(value);
  const applied = useRef(value);
  // The page's callback is new at each of its renders (live refreshes): the pause must not restart.
  const apply = useRef(onChange);
  apply.current = onChange;
  const submit = useCallback((text: string) => {
    const next = text.trim().slice(0, MAX_SEARCH);
    if (next === applied.current) return;
    applied.current = next;
    apply.current(next);
  }, []);
  // Changed otherwise (back, a link): the box shows it. Its own search coming back leaves what was typed since.
  useEffect(() => {
    if (value !== applied.current) setDraft(value);
    applied.current = value;
  }, [value]);
  useEffect(() => {
    const timer = setTimeout(() => submit(draft), SEARCH_PAUSE_MS);
    return () => clearTimeout(timer);
  }, [draft, submit]);
  return (
    <>
      <label htmlFor="filter-search">Search</label>
      <input
        id="filter-search"
        type="search"
        value={draft}
        maxLength={MAX_SEARCH}
        placeholder="name, hostname or id"
        onChange={(e) => setDraft(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter') submit(draft);
        }}
      />
    </>
  );
}

/** One filter of the page: Any, then the values FILTER_CHOICES offers for it. */
function FilterSelect({
  name,
  label,
  value,
  onChange,
}: {
  name: keyof typeof FILTER_CHOICES;
  label: string;
  value: string;
  onChange: (next: Partial<ConnectorFilters>) => void;
}) {
  return (
    <>
      <label htmlFor={`filter-${name}`}>{label}</label>
      <select
        id={`filter-${name}`}
        value={value}
        onChange={(e) => onChange({ [name]: e.target.value } as Partial<ConnectorFilters>)}
      >
        <option value="">Any</option>
        {Object.entries(FILTER_CHOICES[name]).map(([choice, text]) => (
          <option key={choice} value={choice}>
            {text}
          </option>
        ))}
      </select>
    </>
  );
}
