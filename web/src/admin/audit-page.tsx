import { useCallback, useEffect, useRef, useState } from 'react';
import { auditTypeMisses, refusalsCounted } from '../../../shared/audit-event-types.js';
import { errorText } from '../api.js';
import { useConsole } from '../console-context.js';
import { formatTime } from '../format.js';
import { AUDIT_TYPE_PATTERN, type AuditFilters, auditHref } from '../route.js';
import type { AuditEvent } from '../types.js';
import { Breakable } from '../ui/breakable.js';
import { Pager, readPage } from '../ui/pager.js';
import { type AuditNames, useAuditNames } from './audit-names.js';

export const AUDIT_PAGE_SIZE = 50;

/** A name where the server still knows one, else the id; the id in the title either way. */
function Named({ kind, id, name }: { kind: string; id: string; name: string | undefined }) {
  return (
    <span className="named" title={id}>
      {kind} <Breakable text={name ?? id} />
    </span>
  );
}

/** The name an event kept in its details (a deletion's, an enrollment's), for ids the server no longer knows. */
function keptName(event: AuditEvent): string | undefined {
  return typeof event.details.name === 'string' ? event.details.name : undefined;
}

/** Who did it: `admin <key name>`, `agent <connector name>`, `system`, `anonymous`. */
function Actor({ event, names }: { event: AuditEvent; names: AuditNames }) {
  const { actor } = event;
  if (actor.kind === 'admin')
    return <Named kind="admin" id={actor.apiKeyId} name={names.key(actor.apiKeyId)} />;
  if (actor.kind === 'agent') {
    if (!actor.connectorId) return <>agent (unknown)</>;
    const kept = actor.connectorId === event.connectorId ? keptName(event) : undefined;
    return <Named kind="agent" id={actor.connectorId} name={names.connector(actor.connectorId) ?? kept} />;
  }
  return <>{actor.kind}</>;
}

/** What it was done to: the group, the connector and the key, by name where known. */
function Target({ event, names }: { event: AuditEvent; names: AuditNames }) {
  const named = keptName(event);
  const parts = [
    event.groupId && (
      <Named
        key="g"
        kind="group"
        id={event.groupId}
        name={names.group(event.groupId) ?? (event.connectorId ? undefined : named)}
      />
    ),
    event.connectorId && (
      <Named
        key="c"
        kind="connector"
        id={event.connectorId}
        name={names.connector(event.connectorId) ?? named}
      />
    ),
    event.keyId && <Named key="k" kind="key" id={event.keyId} name={names.key(event.keyId)} />,
  ].filter(Boolean);
  if (parts.length === 0) return <>—</>;
  return <>{parts.flatMap((part, i) => (i === 0 ? [part] : [' · ', part]))}</>;
}

/** An event's details in one line (`name="x", force=true`); the full text in its title when cut. */
function detailsText(event: AuditEvent): string {
  return Object.entries(event.details)
    .map(([key, value]) => `${key}=${JSON.stringify(value)}`)
    .join(', ');
}

/** What to say when a type filter names no type the server writes (so the empty table is a typo). */
function unknownTypeHint(filter: string): string | null {
  const near = filter ? auditTypeMisses(filter) : null;
  if (!near) return null;
  return `No event type is "${filter}" or starts with "${filter}.".${near.length > 0 ? ` Did you mean ${near.map((n) => `"${n}"`).join(' or ')}?` : ''}`;
}

/**
 * Audit: newest first, a page at a time (the server's `before` cursor), filtered by type and security
 * flag on the server. The page number is in the URL; the cursor each page starts at is kept once
 * read, and a page opened from a link or a reload is reached by reading the pages before it (so it
 * counts from the newest event then). `audit.list` gives no count: one event more than a page is
 * asked for, to know whether there is an older page, and the total is "at least" until the last.
 */
export function AuditPage({ filters }: { filters: AuditFilters }) {
  const { api } = useConsole();
  // The filters are the URL's (a reload or a shared link keeps them); the Type box is a draft until Filter.
  const { type: appliedType, security: securityOnly, page } = filters;
  const [type, setType] = useState(appliedType);
  useEffect(() => setType(appliedType), [appliedType]);
  // The box shows a click at once; the URL's change (a moment later) is what filters.
  const [securityBox, setSecurityBox] = useState(securityOnly);
  useEffect(() => setSecurityBox(securityOnly), [securityOnly]);
  // The pages' cursors belong to the filters they were read with: other filters start at the newest.
  const filterKey = `${appliedType}/${securityOnly}`;
  /** `starts[i]`: the id of the event page i + 2 starts after, under the filters of `filterKey`. */
  const pageStarts = useRef<{ filterKey: string; starts: string[] }>({ filterKey, starts: [] });
  /** Applies other filters, from the newest page: in place of this URL (no history entry per choice). */
  const filter = (next: Omit<AuditFilters, 'page'>) => location.replace(auditHref({ ...next, page: 1 }));
  /** Another page: the window goes back to its top, where the events start (it stayed at the pager). */
  const turnTo = (to: number) => {
    location.replace(auditHref({ ...filters, page: to }));
    window.scrollTo(0, 0);
  };
  // A URL naming a filter the page does not take (or in another order) is written as it applies.
  useEffect(() => {
    const href = auditHref({ type: appliedType, security: securityOnly, page });
    if (location.hash !== href) location.replace(href);
  }, [appliedType, securityOnly, page]);
  const [events, setEvents] = useState<AuditEvent[] | null>(null);
  /** The events shown: which page they are, and whether there are older ones. */
  const [shown, setShown] = useState<{ page: number; more: boolean } | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const names = useAuditNames(api, events);

  /** The newest refresh started: an older one's answer (other filters, another page) is dropped. */
  const latest = useRef(0);
  const refresh = useCallback(async () => {
    const asked = ++latest.current;
    if (pageStarts.current.filterKey !== filterKey) pageStarts.current = { filterKey, starts: [] };
    try {
      const read = await readPage(
        page,
        pageStarts.current.starts,
        async (before) => {
          // One more than a page: whether there is an older page is known without a page that may be empty.
          const listed = await api.audit.list.query({
            limit: AUDIT_PAGE_SIZE + 1,
            before,
            type: appliedType || undefined,
            security: securityOnly || undefined,
          });
          const items = listed.slice(0, AUDIT_PAGE_SIZE);
          return { items, next: listed.length > AUDIT_PAGE_SIZE ? items.at(-1)!.id : null };
        },
        () => asked !== latest.current,
      );
      if (read === null) return;
      if ('goTo' in read)
        return location.replace(auditHref({ type: appliedType, security: securityOnly, page: read.goTo }));
      setEvents(read.items);
      setShown({ page, more: read.more });
      setLoadError(null);
    } catch (error) {
      if (asked === latest.current) setLoadError(errorText(error));
    }
  }, [api, page, appliedType, securityOnly, filterKey]);
  useEffect(() => {
    void refresh();
  }, [refresh]);

  return (
    <>
      <div className="page-head">
        <h1>Audit</h1>
        <button type="button" onClick={() => void refresh()}>
          Refresh
        </button>
      </div>
      <form
        className="filters"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault();
          filter({ type: type.trim(), security: securityOnly });
        }}
      >
        <label htmlFor="audit-type">Type</label>
        <input
          id="audit-type"
          value={type}
          placeholder="e.g. group or connector.revoked"
          pattern="[a-z_.]*"
          title="An event type or its first part: lower-case letters, _ and ."
          maxLength={64}
          onChange={(e) => setType(e.target.value.toLowerCase())}
        />
        <button type="submit">Filter</button>
        <input
          id="audit-security"
          type="checkbox"
          checked={securityBox}
          // With what the Type box says now: an emptied box must not leave its old filter on.
          onChange={(e) => {
            setSecurityBox(e.target.checked);
            // A box the page would not take (its pattern stops only Filter) goes back to the filter in force.
            const next = AUDIT_TYPE_PATTERN.test(type.trim()) ? type.trim() : appliedType;
            setType(next);
            filter({ type: next, security: e.target.checked });
          }}
        />
        <label htmlFor="audit-security">Security events only</label>
      </form>
      {loadError && (
        <p className="error" role="alert">
          Could not load the audit log: {loadError}
        </p>
      )}
      {events?.length === 0 && (
        <p data-testid="audit-empty">
          No events{appliedType ? ` of type ${appliedType}` : ''}
          {securityOnly ? ' flagged security' : ''}. {unknownTypeHint(appliedType)}
        </p>
      )}
      {events && events.length > 0 && (
        <table className="audit">
          <caption>Events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Address</th>
              <th scope="col">Security</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {events.map((event) => (
              <tr key={event.id}>
                <td>{formatTime(event.at, { seconds: true })}</td>
                <td>
                  <Actor event={event} names={names} />
                </td>
                <th scope="row" className="audit-type">
                  {event.type}
                  {event.outcome !== 'success' &&
                    ` (${event.outcome}${event.reason ? `: ${event.reason}` : ''})`}
                  {refusalsCounted(event) && ' '}
                  {refusalsCounted(event) && (
                    <span
                      className="badge"
                      title={`${refusalsCounted(event)} such refusals after the first, ${String(event.details.windowStart)} to ${String(event.details.windowEnd)}, counted into this one event`}
                    >
                      ×{refusalsCounted(event)}
                    </span>
                  )}
                </th>
                <td>
                  <Target event={event} names={names} />
                </td>
                <td>{event.remoteAddress ?? '—'}</td>
                <td>{event.security ? <span className="badge warn">security</span> : ''}</td>
                <td className="details">{detailsText(event)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {events && events.length > 0 && shown && (
        <Pager
          page={shown.page}
          first={(shown.page - 1) * AUDIT_PAGE_SIZE + 1}
          rows={events.length}
          more={shown.more}
          total={null}
          onTurn={turnTo}
          labels={{ previous: 'Newer', next: 'Older' }}
        />
      )}
    </>
  );
}
