import { useEffect, useState } from 'react';

/** The console's pages, in the URL's fragment (no server route needed, and none other changes). */
export type Route = { page: 'groups' } | { page: 'group'; groupId: string };

export function parseRoute(hash: string): Route {
  const match = /^#\/groups\/(grp_[a-z0-9]{1,40})$/.exec(hash);
  return match ? { page: 'group', groupId: match[1]! } : { page: 'groups' };
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
