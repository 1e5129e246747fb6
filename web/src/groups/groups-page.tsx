import { useCallback, useEffect, useState } from 'react';
import { errorText } from '../api.js';
import { useConsole } from '../console-context.js';
import type { GroupRow } from '../types.js';
import { LivePageHead } from '../ui/live-page-head.js';
import { useLiveRefresh } from '../use-live-refresh.js';
import { CreateGroup } from './create-group.js';
import { type GroupDialogState, GroupDialogs } from './group-dialogs.js';
import { GroupsTable } from './groups-table.js';
import { CountTiles, NextSteps } from './overview.js';

/**
 * Connector Groups: what to do next, the counts, the groups. Two calls fetch it all (groups with
 * their connector counts; key expiries from the API keys list), again whenever the server reports a
 * change.
 */
export function GroupsPage() {
  const { api, adminKey } = useConsole();
  const [groups, setGroups] = useState<GroupRow[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [dialog, setDialog] = useState<GroupDialogState | null>(null);

  const refresh = useCallback(async () => {
    try {
      const [list, keys] = await Promise.all([api.groups.list.query({}), api.apiKeys.list.query({})]);
      const keyOf = new Map(keys.filter((k) => k.kind === 'provisioning').map((k) => [k.groupId, k]));
      setGroups(list.map((g) => ({ ...g, key: keyOf.get(g.id) ?? null })));
      setLoadError(null);
    } catch (error) {
      setLoadError(errorText(error));
    }
  }, [api]);

  useEffect(() => {
    void refresh();
  }, [refresh]);
  const live = useLiveRefresh(adminKey, refresh);

  return (
    <>
      <LivePageHead title="Connector Groups" live={live} onRefresh={() => void refresh()} />
      {loadError && (
        <p className="error" role="alert">
          Could not load the groups: {loadError}
        </p>
      )}
      {groups && (
        <>
          <NextSteps groups={groups} onViewKey={(group) => setDialog({ kind: 'key', group })} />
          <CountTiles groups={groups} />
          <CreateGroup onCreated={refresh} />
          <GroupsTable groups={groups} onAction={setDialog} />
        </>
      )}
      {dialog && <GroupDialogs state={dialog} onClose={() => setDialog(null)} onChanged={refresh} />}
    </>
  );
}
