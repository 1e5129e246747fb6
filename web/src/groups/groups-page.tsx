import { useCallback, useEffect, useState } from 'react';
import { useConsole } from '../console-context.js';
import type { GroupRow } from '../types.js';
import { LivePageHead } from '../ui/live-page-head.js';
import { useLiveRefresh } from '../use-live-refresh.js';
import { useLoaded } from '../use-loaded.js';
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
  const [dialog, setDialog] = useState<GroupDialogState | null>(null);
  // What the last dialog did, until the next one opens.
  const [notice, setNotice] = useState<string | null>(null);
  const openDialog = (next: GroupDialogState) => {
    setNotice(null);
    setDialog(next);
  };

  const {
    data: groups,
    error: loadError,
    refresh,
  } = useLoaded(
    useCallback(async (): Promise<GroupRow[]> => {
      const [list, keys] = await Promise.all([api.groups.list.query({}), api.apiKeys.list.query({})]);
      const keyOf = new Map(keys.filter((k) => k.kind === 'provisioning').map((k) => [k.groupId, k]));
      return list.map((g) => ({ ...g, key: keyOf.get(g.id) ?? null }));
    }, [api]),
  );
  const live = useLiveRefresh(adminKey, refresh);
  // A group deleted elsewhere (another tab, the CLI) while its dialog is open here: the dialog
  // showed its key as Active, and Reveal and Copy went on working on a key that enrolls no one.
  const gone = dialog && dialog.kind !== 'delete' && groups && !groups.some((g) => g.id === dialog.group.id);
  useEffect(() => {
    if (!gone || !dialog) return;
    setDialog(null);
    setNotice(`${dialog.group.name} was deleted elsewhere: its key enrolls no one.`);
  }, [gone, dialog]);

  return (
    <>
      <LivePageHead title="Connector Groups" live={live} onRefresh={() => void refresh()} />
      {loadError && (
        <p className="error" role="alert">
          Could not load the groups: {loadError}
        </p>
      )}
      {notice && (
        <p className="success" role="status" data-testid="groups-notice">
          {notice}
        </p>
      )}
      {groups && (
        <>
          <NextSteps groups={groups} onViewKey={(group) => openDialog({ kind: 'key', group })} />
          <CountTiles groups={groups} />
          <CreateGroup onCreated={refresh} />
          <GroupsTable groups={groups} onAction={openDialog} />
        </>
      )}
      {dialog && (
        <GroupDialogs
          // The row as the live feed keeps it: a key regenerated elsewhere reaches an open dialog.
          state={{ ...dialog, group: groups?.find((g) => g.id === dialog.group.id) ?? dialog.group }}
          onClose={() => setDialog(null)}
          onChanged={refresh}
          onNotice={setNotice}
        />
      )}
    </>
  );
}
