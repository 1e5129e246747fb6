import { useCallback, useEffect } from 'react';
import { useConsole } from '../console-context.js';
import { formatTime } from '../format.js';
import { useLoaded } from '../use-loaded.js';

/** Heartbeats come every 5 s: read again as often, so a replica that stops shows it within one. */
const REFRESH_MS = 5000;

const heartbeatText = (ageMs: number | null) => (ageMs === null ? '—' : `${(ageMs / 1000).toFixed(1)} s ago`);

/**
 * Admin › Servers: the server processes of the deployment (`replicas.list`), where each runs, its
 * version, heartbeat and sessions; read again every 5 s while the page is open.
 */
export function ServersPage() {
  const { api } = useConsole();
  const {
    data: view,
    error: loadError,
    refresh,
  } = useLoaded(useCallback(() => api.replicas.list.query({}), [api]));
  useEffect(() => {
    const timer = setInterval(() => void refresh(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [refresh]);

  const live = view?.replicas.filter((r) => r.state === 'live').length ?? 0;
  const versions = new Set(view?.replicas.map((r) => r.version ?? 'unknown'));
  return (
    <>
      <div className="page-head">
        <h1>Servers</h1>
        <button type="button" onClick={() => void refresh()}>
          Refresh
        </button>
      </div>
      {loadError && (
        <p className="error" role="alert">
          Could not load the servers: {loadError}
        </p>
      )}
      {view && (
        <>
          <p data-testid="servers-summary">
            {view.backend === 'embedded'
              ? 'One server on the embedded store. Replicas share a PostgreSQL database (serve --database-url).'
              : `${live} live replica${live === 1 ? '' : 's'} of ${view.replicas.length} on PostgreSQL; ` +
                `a heartbeat older than ${(view.deadAfterMs ?? 0) / 1000} s counts as dead.`}{' '}
            {view.sessions} agent session{view.sessions === 1 ? '' : 's'}.
          </p>
          {versions.size > 1 && (
            <p className="warning" role="status">
              The replicas run different versions ({[...versions].join(', ')}): an upgrade in progress?
            </p>
          )}
          <table className="servers">
            <caption>Server processes</caption>
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Host</th>
                <th scope="col">PID</th>
                <th scope="col">Version</th>
                <th scope="col">Started</th>
                <th scope="col">Heartbeat</th>
                <th scope="col">State</th>
                <th scope="col">Ready</th>
                <th scope="col">Sessions</th>
              </tr>
            </thead>
            <tbody>
              {view.replicas.map((r) => (
                <tr key={r.id} title={r.id} aria-current={r.self ? 'true' : undefined}>
                  <th scope="row">
                    {r.url ?? '—'} {r.self && <span className="badge">this console’s server</span>}
                  </th>
                  <td>{r.host ?? '—'}</td>
                  <td>{r.pid ?? '—'}</td>
                  <td>{r.version ?? 'unknown'}</td>
                  <td>{formatTime(r.startedAt)}</td>
                  <td>{heartbeatText(r.heartbeatAgeMs)}</td>
                  <td>
                    <span className={`badge ${r.state === 'dead' ? 'revoked' : 'enabled'}`}>{r.state}</span>
                  </td>
                  <td title={r.problems.join('; ') || undefined}>
                    {r.ready === null ? '—' : r.ready ? 'yes' : ['no', ...r.problems].join(': ')}
                  </td>
                  <td>{r.sessions}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </>
  );
}
