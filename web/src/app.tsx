import { useCallback, useEffect, useMemo, useState } from 'react';
import { ApiKeysPage } from './admin/api-keys-page.js';
import { AuditPage } from './admin/audit-page.js';
import { ServersPage } from './admin/servers-page.js';
import { createApiClient } from './api.js';
import { ConnectorsPage } from './connectors/connectors-page.js';
import { ConsoleContextValue, READ_ONLY_REASON } from './console-context.js';
import { GroupsPage } from './groups/groups-page.js';
import { useRoute } from './route.js';
import { clearSession, loadSession, type Session, saveSession } from './session.js';
import { SignIn } from './sign-in.js';

const PAGE_TITLES = {
  groups: 'Connector Groups',
  group: 'Connectors',
  'api-keys': 'API Keys',
  audit: 'Audit',
  servers: 'Servers',
};

/** Signed out: the sign-in page (with why, after a 401). Signed in: the console. */
export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const [signedOutBecause, setSignedOutBecause] = useState<string | null>(null);
  const [notReady, setNotReady] = useState<string | null>(null);
  /** The server's `--public-url` (null: none given, or not read yet). */
  const [publicUrl, setPublicUrl] = useState<string | null>(null);
  const route = useRoute();

  const signOut = useCallback((reason: string | null) => {
    clearSession();
    setSession(null);
    setSignedOutBecause(reason);
  }, []);

  // One client per session: a new one would make every page fetch again.
  const api = useMemo(() => {
    if (!session) return null;
    return createApiClient(
      session.adminKey,
      (message) =>
        signOut(
          `Signed out: the server refused the API key (${message.replace(/\.$/, '')}): it was deleted, it expired, or it is not this server's. Sign in with a valid key.`,
        ),
      setNotReady,
    );
  }, [session, signOut]);
  const context = useMemo(() => {
    if (!session || !api) return null;
    const readOnlyReason = session.scope === 'admin' ? null : READ_ONLY_REASON;
    const serverUrl = publicUrl ?? location.origin;
    return { api, adminKey: session.adminKey, scope: session.scope, readOnlyReason, serverUrl };
  }, [session, api, publicUrl]);
  // Once per session (one small call): where agents reach this server.
  useEffect(() => {
    if (!api) return;
    api.replicas.list
      .query({})
      .then((view) => setPublicUrl(view.publicUrl))
      .catch(() => {}); // Not read: the console's own address stands in (what it did before).
  }, [api]);
  // Open elsewhere than where the server is reached: its live feed is refused here (the origin
  // check), and an agent given this address would enroll and then fail its proof.
  const elsewhere = publicUrl !== null && new URL(publicUrl).origin !== location.origin ? publicUrl : null;

  useEffect(() => {
    const page = !session ? 'Sign in' : PAGE_TITLES[route.page];
    document.title = `${page} · Connector console`;
  }, [session, route]);

  if (!context) {
    return (
      <SignIn
        notice={signedOutBecause}
        onSignedIn={(next) => {
          saveSession(next);
          setSignedOutBecause(null);
          setSession(next);
        }}
      />
    );
  }
  return (
    <ConsoleContextValue.Provider value={context}>
      <header className="top-bar">
        <span className="brand">Connector console</span>
        <nav aria-label="Main">
          <a href="#/groups" aria-current={route.page === 'groups' ? 'page' : undefined}>
            Connector Groups
          </a>
          <a href="#/api-keys" aria-current={route.page === 'api-keys' ? 'page' : undefined}>
            Admin › API Keys
          </a>
          <a href="#/audit" aria-current={route.page === 'audit' ? 'page' : undefined}>
            Audit
          </a>
          <a href="#/servers" aria-current={route.page === 'servers' ? 'page' : undefined}>
            Servers
          </a>
        </nav>
        <span className="scope-badge">{context.scope === 'admin' ? 'Admin' : 'Read-only'}</span>
        <button type="button" className="link-button" onClick={() => signOut(null)}>
          Sign out
        </button>
      </header>
      {elsewhere && (
        <p className="notice" role="status" data-testid="console-elsewhere">
          This server is reached at <a href={elsewhere}>{elsewhere}</a> (its --public-url), not at{' '}
          {location.origin}: open the console there. Here, live updates are refused, and agents must be given{' '}
          {elsewhere} (the agent command says so).
        </p>
      )}
      {notReady && (
        <p className="notice not-ready" role="status" data-testid="not-ready">
          This server is not ready ({notReady}). It shows what it holds in memory, which may miss changes made
          through other servers since; changes fail until it is ready again.
        </p>
      )}
      <main>
        {route.page === 'group' && (
          <ConnectorsPage key={route.groupId} groupId={route.groupId} filters={route.filters} />
        )}
        {route.page === 'groups' && <GroupsPage />}
        {route.page === 'api-keys' && <ApiKeysPage />}
        {route.page === 'audit' && <AuditPage filters={route.filters} />}
        {route.page === 'servers' && <ServersPage />}
      </main>
    </ConsoleContextValue.Provider>
  );
}
