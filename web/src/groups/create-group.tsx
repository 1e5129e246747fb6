import { type FormEvent, useState } from 'react';
import { errorText } from '../api.js';
import { useConsole } from '../console-context.js';
import { DescriptionField } from './description-field.js';
import { EMPTY_POLICY, KeyPolicyFields, maxUsesOf, type PolicyDraft } from './key-policy.js';

/**
 * The form that creates a group, with its first provisioning key. The key's policy and the group's
 * description are under "Options" (closed: a name is all a first group needs); left alone, the key
 * allows any number of enrollments for the server's --key-ttl, as `groups create` makes it.
 */
export function CreateGroup({ onCreated }: { onCreated: () => Promise<void> }) {
  const { api, readOnlyReason } = useConsole();
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [policy, setPolicy] = useState<PolicyDraft>(EMPTY_POLICY);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const locked = readOnlyReason !== null;

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const maxUses = maxUsesOf(policy);
      await api.groups.create.mutate({
        name,
        ...(description.trim() ? { description: description.trim() } : {}),
        ...(maxUses === undefined ? {} : { maxUses }),
        ...(policy.ttl ? { ttl: policy.ttl } : {}),
      });
      setName('');
      setDescription('');
      setPolicy(EMPTY_POLICY);
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
        disabled={locked}
        placeholder="Name"
      />
      <button type="submit" className="primary" disabled={busy || locked || !name.trim()}>
        Create group
      </button>
      {readOnlyReason && <span className="reason">{readOnlyReason}</span>}
      {error && (
        <span className="error" role="alert">
          {error}
        </span>
      )}
      <details className="create-options">
        <summary>Options</summary>
        <fieldset className="key-policy" disabled={locked}>
          <legend>The group and its first key</legend>
          <DescriptionField id="new-group-description" value={description} onChange={setDescription} />
          <KeyPolicyFields
            idPrefix="new-group-key"
            ttlLabel="Key valid for"
            keptWords="the server's --key-ttl (14 days unless set)"
            policy={policy}
            onChange={setPolicy}
          />
        </fieldset>
      </details>
    </form>
  );
}
