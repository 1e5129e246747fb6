import { type FormEvent, useCallback, useRef, useState } from 'react';
import { ADMIN_KEY_PREFIX, keyIdOf } from '../../../shared/protocol.js';
import { errorText } from '../api.js';
import { copyText } from '../clipboard.js';
import { useConsole } from '../console-context.js';
import { formatTime, relativeTime } from '../format.js';
import type { ApiKeyRow } from '../types.js';
import { Breakable } from '../ui/breakable.js';
import { LivePageHead } from '../ui/live-page-head.js';
import { ActionButton, Confirm, Modal, ModalActions } from '../ui/modal.js';
import { useLiveRefresh } from '../use-live-refresh.js';
import { useLoaded } from '../use-loaded.js';

/**
 * Admin › API Keys: the admin keys (create, shown once; delete) and, read-only, each group's
 * provisioning key as the product names it, with the warning not to delete it.
 */
export function ApiKeysPage() {
  const { api, adminKey, readOnlyReason } = useConsole();
  // The key this console signed in with: the server refuses to delete it (API_KEY_IN_USE).
  const ownKeyId = keyIdOf(adminKey, ADMIN_KEY_PREFIX, 'ak');
  const [created, setCreated] = useState<{ name: string; key: string; expiresAt: string | null } | null>(
    null,
  );
  const [copied, setCopied] = useState(false);
  const [deleting, setDeleting] = useState<ApiKeyRow | null>(null);

  const {
    data: keys,
    error: loadError,
    refresh,
  } = useLoaded(useCallback(() => api.apiKeys.list.query({}), [api]));
  // The feed names groups, not admin keys: a group change (a key regenerated, a group made or
  // deleted) changes the provisioning keys listed here; admin keys made elsewhere need Refresh.
  const live = useLiveRefresh(adminKey, refresh, (batch) => batch.groups.length > 0);

  return (
    <>
      {/* Admin keys made or deleted elsewhere are not in the live feed (every admin call touches
          its key, and the page's own calls would refresh it without end): said, not implied. */}
      <LivePageHead
        title="API Keys"
        live={live}
        liveFor="provisioning keys; admin keys made elsewhere show on Refresh"
        onRefresh={() => void refresh()}
      />
      {loadError && (
        <p className="error" role="alert">
          Could not load the keys: {loadError}
        </p>
      )}
      <CreateApiKey
        onCreated={async (made) => {
          setCopied(false);
          setCreated(made);
          await refresh();
        }}
      />
      {keys && (
        <table className="api-keys">
          <caption>Keys</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Kind</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
              <th scope="col">Last used</th>
              <th scope="col">Status</th>
              <th scope="col">
                <span className="offscreen">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {keys.map((k) => (
              <tr key={k.id}>
                <th scope="row">
                  <Breakable text={k.name} />
                  {k.id === ownKeyId && (
                    <>
                      {' '}
                      <span className="badge" title="The key this console is signed in with">
                        this console
                      </span>
                    </>
                  )}
                </th>
                <td>
                  {k.kind === 'provisioning'
                    ? 'Provisioning key'
                    : k.scope === 'read'
                      ? 'API key, read only'
                      : 'API key, admin'}
                </td>
                <td>{formatTime(k.createdAt)}</td>
                <td>
                  <Expiry at={k.expiresAt} />
                </td>
                <td>{formatTime(k.lastUsedAt)}</td>
                <td>{k.status}</td>
                <td>
                  {k.kind === 'admin' ? (
                    <ActionButton
                      className="danger"
                      disabledReason={
                        readOnlyReason ??
                        (k.id === ownKeyId
                          ? 'This console is signed in with this key: sign in with another admin key to delete it.'
                          : null)
                      }
                      onClick={async () => setDeleting(k)}
                    >
                      Delete
                    </ActionButton>
                  ) : (
                    <span className="warning">
                      Do not delete: it belongs to its connector group. Regenerate it from the group.
                    </span>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {created && (
        <Modal title={`API key ${created.name} created`} onClose={() => setCreated(null)}>
          <p>Copy it now: it is shown this once and cannot be read back.</p>
          <p data-testid="new-api-key-expiry">
            {created.expiresAt
              ? `It expires ${formatTime(created.expiresAt)} (${relativeTime(created.expiresAt)}).`
              : 'It never expires: delete it when it is no longer needed.'}
          </p>
          <code className="key" data-testid="new-api-key">
            {created.key}
          </code>
          <ModalActions>
            <ActionButton
              className="primary"
              onClick={async () => {
                await copyText(created.key);
                setCopied(true);
              }}
            >
              Copy
            </ActionButton>
            <button type="button" onClick={() => setCreated(null)}>
              Done
            </button>
          </ModalActions>
          {copied && (
            <p className="success" role="status">
              Key copied to the clipboard.
            </p>
          )}
        </Modal>
      )}
      {deleting && (
        <Confirm
          title={`Delete API key ${deleting.name}?`}
          confirmLabel="Delete key"
          danger
          onClose={() => setDeleting(null)}
          onConfirm={async () => {
            await api.apiKeys.delete.mutate({ id: deleting.id });
            setDeleting(null);
            await refresh();
          }}
        >
          <p>
            It stops working at once, and consoles signed in with it are signed out. The server refuses to
            delete the key making the call (the one this console is signed in with): sign in with another
            admin key to delete this one.
          </p>
        </Confirm>
      )}
    </>
  );
}

/** When a key expires, with how far off that is; "Never" for a key without an expiry. */
function Expiry({ at }: { at: string | null }) {
  if (!at) return <>Never</>;
  return (
    <time dateTime={at}>
      {formatTime(at)} ({relativeTime(at)})
    </time>
  );
}

/** The lifetimes Create key offers, in days as the API takes them ('' is Never, the default). */
const KEY_LIFETIMES: ReadonlyArray<[days: string, words: string]> = [
  ['', 'Never'],
  ['1', 'in 1 day'],
  ['7', 'in 7 days'],
  ['30', 'in 30 days'],
  ['90', 'in 90 days'],
  ['365', 'in 1 year'],
];

function CreateApiKey({
  onCreated,
}: {
  onCreated: (made: { name: string; key: string; expiresAt: string | null }) => Promise<void>;
}) {
  const { api, readOnlyReason } = useConsole();
  const [name, setName] = useState('');
  const [scope, setScope] = useState<'admin' | 'read'>('admin');
  const [expiresInDays, setExpiresInDays] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // A double click submits twice before the disabled button renders: the second would make another key.
  const running = useRef(false);
  async function submit(event: FormEvent) {
    event.preventDefault();
    if (running.current) return;
    running.current = true;
    setBusy(true);
    setError(null);
    try {
      const created = await api.apiKeys.create.mutate({
        name,
        scope,
        ...(expiresInDays ? { expiresInDays: Number(expiresInDays) } : {}),
      });
      setName('');
      await onCreated(created);
    } catch (failure) {
      setError(errorText(failure, 'action'));
    } finally {
      running.current = false;
      setBusy(false);
    }
  }
  const off = readOnlyReason !== null;
  return (
    <form className="create-group" onSubmit={submit} aria-label="Create an API key">
      <label htmlFor="new-key-name">New API key</label>
      <input
        id="new-key-name"
        value={name}
        maxLength={64}
        disabled={off}
        placeholder="Name"
        onChange={(e) => setName(e.target.value)}
      />
      <label htmlFor="new-key-scope">Scope</label>
      <select
        id="new-key-scope"
        value={scope}
        disabled={off}
        onChange={(e) => setScope(e.target.value as 'admin' | 'read')}
      >
        <option value="admin">admin</option>
        <option value="read">read</option>
      </select>
      <label htmlFor="new-key-expiry">Expires</label>
      <select
        id="new-key-expiry"
        value={expiresInDays}
        disabled={off}
        onChange={(e) => setExpiresInDays(e.target.value)}
      >
        {KEY_LIFETIMES.map(([days, words]) => (
          <option key={days} value={days}>
            {words}
          </option>
        ))}
      </select>
      <button type="submit" className="primary" disabled={busy || off || !name.trim()}>
        Create key
      </button>
      {readOnlyReason && <span className="reason">{readOnlyReason}</span>}
      {error && (
        <span className="error" role="alert">
          {error}
        </span>
      )}
    </form>
  );
}
