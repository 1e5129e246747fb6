import { useConsole } from '../console-context.js';
import { formatTime, relativeTime } from '../format.js';
import { groupHref } from '../route.js';
import type { GroupRow } from '../types.js';
import { Breakable } from '../ui/breakable.js';
import { RowMenu } from '../ui/menu.js';
import { useNow } from '../use-now.js';
import type { GroupDialogState } from './group-dialogs.js';

/** How often the column is worked out again: an expiry is shown to the minute, and the second near it. */
const EXPIRY_REFRESH_MS = 5_000;

function KeyExpiry({ group }: { group: GroupRow }) {
  const now = useNow(EXPIRY_REFRESH_MS);
  if (!group.key?.expiresAt) return <>—</>;
  // The list says "active" as of its load; a key that expired since is expired here too.
  const expired = group.key.status === 'expired' || Date.parse(group.key.expiresAt) <= now;
  if (expired || group.key.status !== 'active')
    return <span className="badge warn">{expired ? 'Expired' : 'Used up'}</span>;
  return (
    <time dateTime={group.key.expiresAt} title={formatTime(group.key.expiresAt)}>
      {relativeTime(group.key.expiresAt, now)}
    </time>
  );
}

export function GroupsTable({
  groups,
  onAction,
}: {
  groups: GroupRow[];
  onAction: (state: GroupDialogState) => void;
}) {
  const { readOnlyReason } = useConsole();
  if (groups.length === 0) return <p>No groups yet: create one above.</p>;
  return (
    <table className="groups">
      <caption>Groups</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Status</th>
          <th scope="col">Connectors (connected / total)</th>
          <th scope="col">Key expires</th>
          <th scope="col">
            <span className="offscreen">Actions</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {groups.map((group) => (
          <tr key={group.id} data-group-id={group.id}>
            <th scope="row" className="group-name">
              <a href={groupHref(group.id)}>
                <Breakable text={group.name} />
              </a>
              {/* Given at creation (Options) or in Rename: it was stored and never shown. */}
              {group.description && (
                <div className="help group-description">
                  <Breakable text={group.description} />
                </div>
              )}
            </th>
            <td>
              <span className={`badge ${group.status}`}>
                {group.status === 'enabled' ? 'Enabled' : 'Disabled'}
              </span>
            </td>
            <td className="connector-counts">
              {group.counts.connected} / {group.counts.total}
            </td>
            <td>
              <KeyExpiry group={group} />
            </td>
            <td>
              <RowMenu
                label={`Actions for ${group.name}`}
                items={[
                  { label: 'View Provisioning Key', onSelect: () => onAction({ kind: 'key', group }) },
                  {
                    label: 'Rename',
                    onSelect: () => onAction({ kind: 'rename', group }),
                    disabledReason: readOnlyReason,
                  },
                  {
                    label: group.status === 'enabled' ? 'Disable' : 'Enable',
                    onSelect: () => onAction({ kind: 'status', group }),
                    disabledReason: readOnlyReason,
                  },
                  {
                    label: 'Delete',
                    danger: true,
                    onSelect: () => onAction({ kind: 'delete', group }),
                    disabledReason: readOnlyReason,
                  },
                ]}
              />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
