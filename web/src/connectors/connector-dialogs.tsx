import { useConsole } from '../console-context.js';
import type { Connector } from '../types.js';
import { Confirm } from '../ui/modal.js';

export type ConnectorDialogState = { kind: 'status' | 'revoke' | 'delete'; connector: Connector };

/** The confirmation a connector's row menu opened: it says what happens, then does it. */
export function ConnectorDialog({
  state: { kind, connector },
  onClose,
  onChanged,
}: {
  state: ConnectorDialogState;
  onClose: () => void;
  onChanged: () => Promise<void>;
}) {
  const { api } = useConsole();
  const ref = { connectorId: connector.id };
  const run = (call: () => Promise<unknown>) => async () => {
    await call();
    onClose();
    await onChanged();
  };
  if (kind === 'status') {
    const disabling = connector.status !== 'disabled';
    return (
      <Confirm
        title={`${disabling ? 'Disable' : 'Enable'} ${connector.name}?`}
        confirmLabel={disabling ? 'Disable connector' : 'Enable connector'}
        danger={disabling}
        onClose={onClose}
        onConfirm={run(() => (disabling ? api.connectors.disable : api.connectors.enable).mutate(ref))}
      >
        <p>
          {disabling
            ? 'Its agent is told at once and stops serving; it stays enrolled and connected, and can be enabled again.'
            : 'Its agent is told at once and serves again.'}
        </p>
      </Confirm>
    );
  }
  if (kind === 'revoke') {
    return (
      <Confirm
        title={`Revoke ${connector.name}?`}
        confirmLabel="Revoke connector"
        danger
        onClose={onClose}
        onConfirm={run(() => api.connectors.revoke.mutate(ref))}
      >
        <p>
          Its identity stops working at once: the agent is disconnected, wipes its identity and exits. The
          host must enroll again to come back.
        </p>
        <p>
          The group's provisioning key is regenerated too (the old one may have been copied from the same
          host): hosts that have not enrolled yet need the new key. Other connectors are unaffected.
        </p>
      </Confirm>
    );
  }
  return (
    <Confirm
      title={`Delete ${connector.name}?`}
      confirmLabel="Delete connector"
      danger
      onClose={onClose}
      onConfirm={run(() => api.connectors.delete.mutate(ref))}
    >
      <p>
        The connector is removed: if its agent is connected it is disconnected, wipes its identity and stops.
        The host must enroll again to come back. This cannot be undone.
      </p>
    </Confirm>
  );
}
