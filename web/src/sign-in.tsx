import { type FormEvent, useState } from 'react';
import { createApiClient, errorText } from './api.js';
import { apiKeyIdOf, type Session } from './session.js';

/**
 * Checks the key with one call (the API keys list, which any valid key may read) and takes its scope
 * from its own row there.
 */
async function checkKey(adminKey: string): Promise<Session> {
  const api = createApiClient(adminKey, () => {});
  const keys = await api.apiKeys.list.query({});
  const mine = keys.find((k) => k.kind === 'admin' && k.id === apiKeyIdOf(adminKey));
  return { adminKey, scope: mine?.scope === 'admin' ? 'admin' : 'read' };
}

export function SignIn({ notice, onSignedIn }: { notice: string | null; onSignedIn: (s: Session) => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    // A group's provisioning key is the other key admins copy: said, and never sent as an admin key.
    if (key.trim().startsWith('cpk_')) {
      setError(
        'Sign-in failed: that is a provisioning key (cpk_…), which agents enroll with. Sign in with an admin API key (cak_…): the bootstrap one is in admin.key, below.',
      );
      return;
    }
    setBusy(true);
    try {
      onSignedIn(await checkKey(key.trim()));
    } catch (failure) {
      setError(`Sign-in failed: ${errorText(failure, 'action')}`);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="sign-in">
      <h1>Connector console</h1>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={submit}>
        <label htmlFor="admin-key">Admin API key</label>
        <input
          id="admin-key"
          type="password"
          autoComplete="off"
          spellCheck={false}
          placeholder="cak_…"
          value={key}
          onChange={(e) => setKey(e.target.value)}
          required
        />
        <p className="help">
          The bootstrap key is the file <code>admin.key</code> in the server's data dir (<code>./data</code>{' '}
          unless it was started with <code>--data-dir</code>; its start-up line names the file). It is kept
          for this tab only and sent in the Authorization header.
        </p>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy || key.trim() === ''}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
