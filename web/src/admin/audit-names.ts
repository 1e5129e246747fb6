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

  const kept = keptNames(events ?? []);

  useEffect(() => {
    if (!events || events.length === 0) return;
    let cancelled = false;
    const { groups, connectors, keys } = cache.current;
    const named = keptNames(events);
    // A connector a deletion on this page names is gone: its event's name is what there is to show,
    // and asking the server would only get a 404.
    const unknownConnectors = [
      ...new Set(
        events.flatMap((e) => [e.connectorId, e.actor.kind === 'agent' ? e.actor.connectorId : null]),
      ),
    ]
      .filter((id): id is string => typeof id === 'string' && !connectors.has(id) && !named.gone.has(id))
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
  // The server's current name first (a rename since); else the name an event on this page kept.
  return {
    group: (id) => groups.get(id) ?? kept.groups.get(id),
    connector: (id) => connectors.get(id) ?? kept.connectors.get(id),
    key: (id) => keys.get(id) ?? kept.keys.get(id),
  };
}

/**
 * The names events of a page kept in their details (`details.name`: a group's, a connector's or an
 * admin key's, by the event's type), so that ids the server no longer knows (deleted) still read
 * as names on every event of the page that names them; and the connectors a deletion there names.
 */
function keptNames(events: readonly AuditEvent[]) {
  const groups = new Map<string, string>();
  const connectors = new Map<string, string>();
  const keys = new Map<string, string>();
  const gone = new Set<string>();
  for (const e of events) {
    const name = typeof e.details.name === 'string' ? e.details.name : null;
    if (e.connectorId && (e.type === 'connector.deleted' || e.type === 'connector.pending_expired'))
      gone.add(e.connectorId);
    if (!name) continue;
    if (e.type.startsWith('api_key.') && e.keyId) keys.set(e.keyId, name);
    else if (e.connectorId && /^(connector|enrollment|session)\./.test(e.type))
      connectors.set(e.connectorId, name);
    else if (e.type.startsWith('group.') && e.groupId && !e.connectorId) groups.set(e.groupId, name);
  }
  return { groups, connectors, keys, gone };
}
