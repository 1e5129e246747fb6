import { type FormEvent, useState } from 'react';
import { errorText } from '../api.js';
import { useConsole } from '../console-context.js';

export function CreateGroup({ onCreated }: { onCreated: () => Promise<void> }) {
  const { api, readOnlyReason } = useConsole();
  const [name, setName] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.groups.create.mutate({ name });
      setName('');
      await onCreated();
    } catch (failure) {
      setError(errorText(failure, 'action'));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="create-group" onSubmit={submit} aria-label="Create a group">
      <label htmlFor="new-group-name">New group</label>
      <input
        id="new-group-name"
        value={name}
        maxLength={64}
        onChange={(e) => setName(e.target.value)}
        disabled={readOnlyReason !== null}
        placeholder="Name"
      />
      <button type="submit" className="primary" disabled={busy || readOnlyReason !== null || !name.trim()}>
        Create group
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
