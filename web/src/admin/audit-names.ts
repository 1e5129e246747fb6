import { useEffect, useRef, useState } from 'react';
import type { ApiClient } from '../api.js';
import type { AuditEvent } from '../types.js';

/** The names of the groups, connectors and keys a page of events names by id, as far as the server still knows them. */
export interface AuditNames {
  group(id: string): string | undefined;
  connector(id: string): string | undefined;
  /** An admin key's name, or a group's provisioning key's (`Connector Provisioning Key - <group>`). */
  key(id: string): string | undefined;
}

/** Connectors looked up at once for one page (a page holds at most 50 events). */
const CONNECTOR_LOOKUPS_PER_PAGE = 50;

/**
 * Resolves the ids of `events` to names: groups and keys from their lists (one call each per page
 * shown), connectors one by one for those not seen yet (cached for the page's lifetime). Ids the
 * server no longer has (deleted, superseded) stay ids; the events of a deletion carry the name in
 * their details.
 */
export function useAuditNames(api: ApiClient, events: readonly AuditEvent[] | null): AuditNames {
  const cache = useRef({
    groups: new Map<string, string>(),
    connectors: new Map<string, string | null>(),
    keys: new Map<string, string>(),
  });
  const [, setVersion] = useState(0);

  useEffect(() => {
    if (!events || events.length === 0) return;
    let cancelled = false;
    const { groups, connectors, keys } = cache.current;
    const unknownConnectors = [
      ...new Set(
        events.flatMap((e) => [e.connectorId, e.actor.kind === 'agent' ? e.actor.connectorId : null]),
      ),
    ]
      .filter((id): id is string => typeof id === 'string' && !connectors.has(id))
      .slice(0, CONNECTOR_LOOKUPS_PER_PAGE);
    const lookups = [
      api.groups.list.query({}).then((list) => {
        for (const g of list) groups.set(g.id, g.name);
      }),
      api.apiKeys.list.query({}).then((list) => {
        for (const k of list) keys.set(k.id, k.name);
      }),
      ...unknownConnectors.map((id) =>
        api.connectors.get.query({ connectorId: id }).then(
          (c) => connectors.set(id, c.name),
          () => connectors.set(id, null), // gone: the id is what is left
        ),
      ),
    ];
    // A name that cannot be read leaves the id shown: nothing to report beside the events.
    void Promise.allSettled(lookups).then(() => {
      if (!cancelled) setVersion((v) => v + 1);
    });
    return () => {
      cancelled = true;
    };
  }, [api, events]);

  const { groups, connectors, keys } = cache.current;
  return {
    group: (id) => groups.get(id),
    connector: (id) => connectors.get(id) ?? undefined,
    key: (id) => keys.get(id),
  };
}
