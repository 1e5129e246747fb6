import { useEffect, useState } from 'react';

/** The console's pages, in the URL's fragment (no server route needed, and none other changes). */
export type Route =
  | { page: 'groups' }
  | { page: 'group'; groupId: string }
  | { page: 'api-keys' }
  | { page: 'audit' }
  | { page: 'servers' };

export function parseRoute(hash: string): Route {
  const match = /^#\/groups\/(grp_[a-z0-9]{1,40})$/.exec(hash);
  if (match) return { page: 'group', groupId: match[1]! };
  if (hash === '#/api-keys') return { page: 'api-keys' };
  if (hash === '#/audit') return { page: 'audit' };
  if (hash === '#/servers') return { page: 'servers' };
  return { page: 'groups' };
}

export function groupHref(groupId: string): string {
  return `#/groups/${groupId}`;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}
