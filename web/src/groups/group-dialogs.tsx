import { type FormEvent, useRef, useState } from 'react';
import { errorReason, errorText } from '../api.js';
import { useConsole } from '../console-context.js';
import type { GroupRow } from '../types.js';
import { Confirm, Modal, ModalActions } from '../ui/modal.js';
import { DescriptionField } from './description-field.js';
import { KeyDialog } from './key-dialog.js';

export type GroupDialogState = { kind: 'key' | 'rename' | 'status' | 'delete'; group: GroupRow };

/** The dialog a row's menu opened. */
export function GroupDialogs({
  state,
  onClose,
  onChanged,
  onNotice,
}: {
  state: GroupDialogState;
  onClose: () => void;
  onChanged: () => Promise<void>;
  /** Says on the page what a dialog did once it is gone (a deleted group leaves no row to show it). */
  onNotice: (text: string) => void;
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
              ? `Its connectors stop serving: the ${group.counts.connected} connected now are told at once, the others when they next connect. They stay enrolled, and serve again when the group is enabled; its key enrolls no host meanwhile.`
              : 'Its connectors are told at once and serve again; its key enrolls hosts again.'}
          </p>
        </Confirm>
      );
    }
    case 'delete':
      return (
        <DeleteGroupDialog
          group={group}
          onClose={onClose}
          onDeleted={async (connectors) => {
            // Said once the list is read again: the notice never shows beside the deleted row.
            try {
              await done();
            } finally {
              onNotice(
                connectors === 0
                  ? `Deleted ${group.name}.`
                  : `Deleted ${group.name} and its ${connectors} connector(s).`,
              );
            }
          }}
        />
      );
  }
}

/**
 * Deletes the group, with its connectors when it has some. The count is the one this dialog shows:
 * a host that enrolls while it is open makes the server refuse (GROUP_NOT_EMPTY), and the dialog
 * then says how many there are now and asks again, rather than delete what the admin did not see.
 */
function DeleteGroupDialog({
  group,
  onClose,
  onDeleted,
}: {
  group: GroupRow;
  onClose: () => void;
  onDeleted: (connectors: number) => Promise<void>;
}) {
  const { api } = useConsole();
  const [counts, setCounts] = useState(group.counts);
  const total = counts.total;
  return (
    <Confirm
      title={`Delete ${group.name}?`}
      confirmLabel="Delete group"
      danger
      onClose={onClose}
      onConfirm={async () => {
        try {
          await api.groups.delete.mutate({ groupId: group.id, force: total > 0, expectedConnectors: total });
        } catch (failure) {
          if (errorReason(failure) !== 'GROUP_NOT_EMPTY') throw failure;
          const now = (await api.groups.get.query({ groupId: group.id })).counts;
          setCounts(now);
          throw new Error(
            `A host enrolled meanwhile: the group now has ${now.total} connector(s). Read again, then delete.`,
          );
        }
        await onDeleted(total);
      }}
    >
      <p>{deletionWords(counts)}</p>
      <p>This cannot be undone.</p>
    </Confirm>
  );
}

/** What deleting a group with these connectors does to them, in words: revoked ones have no agent left to tell. */
function deletionWords(counts: GroupRow['counts']): string {
  const key = 'Its provisioning key stops working at once.';
  if (counts.total === 0) return `The group has no connectors. ${key}`;
  const revoked = counts.revoked > 0 ? ` (${counts.revoked} of them revoked already)` : '';
  const offline = counts.total - counts.connected - counts.revoked;
  const told = [
    counts.connected > 0 &&
      `The ${counts.connected} connected now are told at once: their agents wipe their identities and stop.`,
    offline > 0 && `The ${offline} not connected are told when they next connect, and refused.`,
  ].filter(Boolean);
  return `Its ${counts.total} connector(s) are deleted with it${revoked}. ${told.join(' ')}${told.length ? ' ' : ''}Those hosts must enroll again, with another group's key. ${key}`;
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
  const [description, setDescription] = useState(group.description);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const running = useRef(false);
  async function submit(event: FormEvent) {
    event.preventDefault();
    if (running.current) return;
    running.current = true;
    setBusy(true);
    try {
      await api.groups.update.mutate({ groupId: group.id, name, description: description.trim() });
      await onRenamed();
    } catch (failure) {
      setError(errorText(failure, 'action'));
    } finally {
      running.current = false;
      setBusy(false);
    }
  }
  return (
    <Modal title={`Rename ${group.name}`} onClose={onClose}>
      <form onSubmit={submit}>
        <label htmlFor="rename-group">New name</label>
        <input id="rename-group" value={name} maxLength={64} onChange={(e) => setName(e.target.value)} />
        <DescriptionField id="rename-group-description" value={description} onChange={setDescription} />
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <ModalActions>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy || !name.trim()}>
            Rename
          </button>
        </ModalActions>
      </form>
    </Modal>
  );
}
