import { terminationWords } from '../../../shared/termination-words.js';
import { useConsole } from '../console-context.js';
import { atSecond, formatTime } from '../format.js';
import type { Connector } from '../types.js';
import { Breakable } from '../ui/breakable.js';
import { RowMenu } from '../ui/menu.js';
import type { ConnectorDialogState } from './connector-dialogs.js';

const CONNECTION_LABEL = { connected: 'Connected', disconnected: 'Disconnected', never: 'Never connected' };

/** A replica by its URL's host and port, or its id's first characters while its URL is not known. */
function replicaLabel(id: string, urls: ReadonlyMap<string, string | null>): string {
  const url = urls.get(id);
  if (!url) return id.slice(0, 8);
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** When and why a connector was revoked, and whether its host learnt it (hover: when and from where). */
function RevocationNote({ connector }: { connector: Connector }) {
  const heard = connector.termination?.state === 'confirmed';
  return (
    <div
      className="revocation"
      title={terminationWords(connector.termination, 'revoked', atSecond) ?? undefined}
    >
      {formatTime(connector.revokedAt)}
      {connector.revokeReason && (
        <>
          : <Breakable text={connector.revokeReason} />
        </>
      )}
      {heard ? ' (the host confirmed)' : ' (not confirmed by the host yet)'}
    </div>
  );
}

/** Every string here was reported by a host and is hostile: React renders it as text, never markup. */
export function ConnectorsTable({
  rows,
  replicaUrls,
  groupDisabled,
  stale,
  onAction,
}: {
  rows: Connector[];
  /** With replicas: each one's URL by id (`replicas.list`), to name the one holding a session. */
  replicaUrls: ReadonlyMap<string, string | null>;
  /** The group is disabled: an enabled connector is disabled through it. */
  groupDisabled: boolean;
  /** The last load failed: the rows are what an earlier one read. */
  stale: boolean;
  onAction: (state: ConnectorDialogState) => void;
}) {
  const { readOnlyReason } = useConsole();
  if (rows.length === 0) return <p>No connectors match.</p>;
  return (
    <table className={stale ? 'connectors stale' : 'connectors'}>
      <caption>{stale ? 'Connectors, as last loaded (may be out of date)' : 'Connectors'}</caption>
      <thead>
        <tr>
          <th scope="col">Hostname</th>
          <th scope="col">Name</th>
          <th scope="col">Status</th>
          <th scope="col">Connection</th>
          <th scope="col">Origin address</th>
          <th scope="col">Agent version</th>
          <th scope="col">Last seen</th>
          <th scope="col">Enrolled</th>
          <th scope="col">
            <span className="offscreen">Actions</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {rows.map((connector) => {
          const revoked = connector.status === 'revoked';
          const notForRevoked = revoked ? 'Revoked: it can only be deleted.' : readOnlyReason;
          return (
            <tr key={connector.id} data-connector-id={connector.id}>
              <th scope="row" className="hostname">
                {connector.host.hostname}
              </th>
              <td>
                <Breakable text={connector.name} />
                {/* The id the CLI, the API and the audit log name it by. */}
                <code className="connector-id">{connector.id}</code>
              </td>
              <td>
                {groupDisabled && connector.status === 'enabled' ? (
                  <span className="badge disabled" title="Enabled itself, disabled with its group">
                    disabled (group)
                  </span>
                ) : (
                  <span className={`badge ${connector.status}`}>{connector.status}</span>
                )}
                {revoked && <RevocationNote connector={connector} />}
              </td>
              <td className={`connection ${connector.connection}`}>
                {CONNECTION_LABEL[connector.connection]}
                {connector.replica && (
                  <span className="replica" title={`replica ${connector.replica}`}>
                    {' '}
                    via {replicaLabel(connector.replica, replicaUrls)}
                  </span>
                )}
              </td>
              <td>{connector.remoteAddress ?? '—'}</td>
              <td>
                <Breakable text={connector.agentVersion} />
              </td>
              <td>{formatTime(connector.lastSeenAt)}</td>
              <td>{formatTime(connector.enrolledAt)}</td>
              <td>
                <RowMenu
                  label={`Actions for ${connector.name}`}
                  items={[
                    {
                      label: connector.status === 'disabled' ? 'Enable' : 'Disable',
                      onSelect: () => onAction({ kind: 'status', connector }),
                      disabledReason: notForRevoked,
                    },
                    {
                      label: 'Revoke',
                      danger: true,
                      onSelect: () => onAction({ kind: 'revoke', connector }),
                      disabledReason: notForRevoked,
                    },
                    {
                      label: 'Delete',
                      danger: true,
                      onSelect: () => onAction({ kind: 'delete', connector }),
                      disabledReason: readOnlyReason,
                    },
                  ]}
                />
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
