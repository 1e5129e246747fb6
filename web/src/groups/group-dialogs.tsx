import { type FormEvent, useState } from 'react';
import { errorText } from '../api.js';
import { useConsole } from '../console-context.js';
import type { GroupRow } from '../types.js';
import { Confirm, Modal, ModalActions } from '../ui/modal.js';
import { KeyDialog } from './key-dialog.js';

export type GroupDialogState = { kind: 'key' | 'rename' | 'status' | 'delete'; group: GroupRow };

/** The dialog a row's menu opened. */
export function GroupDialogs({
  state,
  onClose,
  onChanged,
}: {
  state: GroupDialogState;
  onClose: () => void;
  onChanged: () => Promise<void>;
}) {
  const { api } = useConsole();
  const { group } = state;
  const done = async () => {
    onClose();
    await onChanged();
  };
  switch (state.kind) {
    case 'key':
      return <KeyDialog group={group} onClose={onClose} onChanged={onChanged} />;
    case 'rename':
      return <RenameDialog group={group} onClose={onClose} onRenamed={done} />;
    case 'status': {
      const disabling = group.status === 'enabled';
      return (
        <Confirm
          title={`${disabling ? 'Disable' : 'Enable'} ${group.name}?`}
          confirmLabel={disabling ? 'Disable group' : 'Enable group'}
          danger={disabling}
          onClose={onClose}
          onConfirm={async () => {
            await (disabling ? api.groups.disable : api.groups.enable).mutate({ groupId: group.id });
            await done();
          }}
        >
          <p>
            {disabling
              ? `Its ${group.counts.total} connector(s) are told at once and stop serving; they stay enrolled and connected, and its key enrolls no one until the group is enabled again.`
              : 'Its connectors are told at once and serve again; its key enrolls hosts again.'}
          </p>
        </Confirm>
      );
    }
    case 'delete':
      return (
        <Confirm
          title={`Delete ${group.name}?`}
          confirmLabel="Delete group"
          danger
          onClose={onClose}
          onConfirm={async () => {
            await api.groups.delete.mutate({ groupId: group.id, force: group.counts.total > 0 });
            await done();
          }}
        >
          <p>
            {group.counts.total === 0
              ? 'The group has no connectors. Its provisioning key stops working at once.'
              : `Its ${group.counts.total} connector(s) are deleted with it: their agents are disconnected at once, their identities are wiped and they stop. Those hosts must enroll again, with another group's key. Its provisioning key stops working at once.`}
          </p>
          <p>This cannot be undone.</p>
        </Confirm>
      );
  }
}

function RenameDialog({
  group,
  onClose,
  onRenamed,
}: {
  group: GroupRow;
  onClose: () => void;
  onRenamed: () => Promise<void>;
}) {
  const { api } = useConsole();
  const [name, setName] = useState(group.name);
  const [error, setError] = useState<string | null>(null);
  async function submit(event: FormEvent) {
    event.preventDefault();
    try {
      await api.groups.update.mutate({ groupId: group.id, name });
      await onRenamed();
    } catch (failure) {
      setError(errorText(failure));
    }
  }
  return (
    <Modal title={`Rename ${group.name}`} onClose={onClose}>
      <form onSubmit={submit}>
        <label htmlFor="rename-group">New name</label>
        <input id="rename-group" value={name} maxLength={64} onChange={(e) => setName(e.target.value)} />
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <ModalActions>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={!name.trim()}>
            Rename
          </button>
        </ModalActions>
      </form>
    </Modal>
  );
}
