import { useEffect, useState } from 'react';

/** The console's pages, in the URL's fragment (no server route needed, and none other changes). */
export type Route =
  | { page: 'groups' }
  | { page: 'group'; groupId: string; filters: ConnectorFilters }
  | { page: 'api-keys' }
  | { page: 'audit'; filters: AuditFilters }
  | { page: 'servers' };

/**
 * The values each filter of a group's connectors page offers, with their labels ('' is Any): what
 * the page lists, and what a URL may name.
 */
export const FILTER_CHOICES = {
  status: { enabled: 'Enabled', disabled: 'Disabled', revoked: 'Revoked' },
  connection: { connected: 'Connected', disconnected: 'Disconnected', never: 'Never connected' },
} as const;
export type StatusFilter = '' | keyof typeof FILTER_CHOICES.status;
export type ConnectionFilter = '' | keyof typeof FILTER_CHOICES.connection;
/** The longest search the server takes (`connectors.list`'s `search`). */
export const MAX_SEARCH = 100;

/** A group's connectors page's filters and page: in its URL, so a reload or a shared link keeps them. */
export interface ConnectorFilters {
  status: StatusFilter;
  connection: ConnectionFilter;
  /** Text the connector's name, hostname or id contains ('' is none): the URL's `q`. */
  search: string;
  /** Which page of the rows these filters give, from 1 (the URL's `page`, left out for 1). */
  page: number;
}

/** A page number as a URL may hold it: 1 to 999,999, no leading zero; anything else is page 1. */
function pageOf(value: string | null): number {
  return value && /^[1-9]\d{0,5}$/.test(value) ? Number(value) : 1;
}

/** The filters a fragment's query names; a value the page does not offer is no filter. */
function filtersOf(query: string | undefined): ConnectorFilters {
  const params = new URLSearchParams(query ?? '');
  const offered = (name: keyof typeof FILTER_CHOICES) => {
    const value = params.get(name) ?? '';
    return Object.hasOwn(FILTER_CHOICES[name], value) ? value : '';
  };
  return {
    status: offered('status') as StatusFilter,
    connection: offered('connection') as ConnectionFilter,
    search: (params.get('q') ?? '').trim().slice(0, MAX_SEARCH),
    page: pageOf(params.get('page')),
  };
}

/** The audit page's filters and page: in its URL (`#/audit?type=connector&security=1&page=2`), as a group's are. */
export interface AuditFilters {
  /** An event type or its first part ('' is any). */
  type: string;
  /** Only events flagged security. */
  security: boolean;
  /** Which page of the events these filters give, newest first, from 1 (the URL's `page`, left out for 1). */
  page: number;
}

/** What an audit type filter may hold: lower-case letters, `_` and `.`, at most 64. */
export const AUDIT_TYPE_PATTERN = /^[a-z_.]{0,64}$/;

/** An audit type filter as the page takes it; anything else is none. */
function auditTypeOf(value: string | null): string {
  const type = (value ?? '').trim().toLowerCase();
  return AUDIT_TYPE_PATTERN.test(type) ? type : '';
}

export function auditHref(filters: AuditFilters): string {
  const params = new URLSearchParams();
  if (filters.type) params.set('type', filters.type);
  if (filters.security) params.set('security', '1');
  if (filters.page > 1) params.set('page', String(filters.page));
  const query = params.toString();
  return `#/audit${query ? `?${query}` : ''}`;
}

export function parseRoute(hash: string): Route {
  const match = /^#\/groups\/(grp_[a-z0-9]{1,40})(?:\?(.*))?$/.exec(hash);
  if (match) return { page: 'group', groupId: match[1]!, filters: filtersOf(match[2]) };
  if (hash === '#/api-keys') return { page: 'api-keys' };
  const audit = /^#\/audit(?:\?(.*))?$/.exec(hash);
  if (audit) {
    const params = new URLSearchParams(audit[1] ?? '');
    return {
      page: 'audit',
      filters: {
        type: auditTypeOf(params.get('type')),
        security: params.get('security') === '1',
        page: pageOf(params.get('page')),
      },
    };
  }
  if (hash === '#/servers') return { page: 'servers' };
  return { page: 'groups' };
}

export function groupHref(groupId: string, filters?: ConnectorFilters): string {
  const params = new URLSearchParams();
  if (filters?.status) params.set('status', filters.status);
  if (filters?.connection) params.set('connection', filters.connection);
  if (filters?.search) params.set('q', filters.search);
  if (filters && filters.page > 1) params.set('page', String(filters.page));
  const query = params.toString();
  return `#/groups/${groupId}${query ? `?${query}` : ''}`;
}

/** The page the URL names; one that names none (`#/nope`, `#/groups/not-an-id`) is made `#/groups`. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  // The groups page shown for a fragment that names no page says so in the URL, in its place (as a
  // filter the page does not offer leaves it): a reload or a link copied then shows what it says.
  useEffect(() => {
    if (route.page === 'groups' && location.hash !== '' && location.hash !== '#/groups')
      location.replace('#/groups');
  }, [route]);
  return route;
}
