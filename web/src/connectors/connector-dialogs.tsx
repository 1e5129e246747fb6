import { useRef } from 'react';
import { terminationWords } from '../../../shared/termination-words.js';
import { useConsole } from '../console-context.js';
import { atSecond } from '../format.js';
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
  /** Told what came of it, in words (did the host confirm a revoke?), for the page to show. */
  onChanged: (outcome: string) => Promise<void>;
}) {
  const { api } = useConsole();
  const reasonRef = useRef<HTMLInputElement>(null);
  const ref = { connectorId: connector.id };
  const run = (call: () => Promise<string>) => async () => {
    const outcome = await call();
    onClose();
    await onChanged(outcome);
  };
  if (kind === 'status') {
    const disabling = connector.status !== 'disabled';
    return (
      <Confirm
        title={`${disabling ? 'Disable' : 'Enable'} ${connector.name}?`}
        confirmLabel={disabling ? 'Disable connector' : 'Enable connector'}
        danger={disabling}
        onClose={onClose}
        onConfirm={run(async () => {
          await (disabling ? api.connectors.disable : api.connectors.enable).mutate(ref);
          return `${connector.name} ${disabling ? 'disabled' : 'enabled'}.`;
        })}
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
        onConfirm={run(async () => {
          const reason = reasonRef.current?.value.trim();
          const revoked = await api.connectors.revoke.mutate({ ...ref, ...(reason ? { reason } : {}) });
          return `${connector.name} ${terminationWords(revoked.termination, 'revoked', atSecond) ?? 'revoked'}. Its group's provisioning key was regenerated.`;
        })}
      >
        <p>
          Its identity stops working at once: the agent is disconnected, wipes its identity and exits. The
          host must enroll again to come back.
        </p>
        <p>
          The group's provisioning key is regenerated too (the old one may have been copied from the same
          host): hosts that have not enrolled yet need the new key. Other connectors are unaffected.
        </p>
        <label htmlFor="revoke-reason">Reason (optional: kept with the connector and in the audit log)</label>
        <input id="revoke-reason" ref={reasonRef} maxLength={500} placeholder="e.g. host decommissioned" />
      </Confirm>
    );
  }
  return (
    <Confirm
      title={`Delete ${connector.name}?`}
      confirmLabel="Delete connector"
      danger
      onClose={onClose}
      onConfirm={run(async () => {
        const deleted = await api.connectors.delete.mutate(ref);
        return `${connector.name} ${terminationWords(deleted.termination, 'deleted', atSecond) ?? 'deleted'}.`;
      })}
    >
      <p>
        The connector is removed: if its agent is connected it is disconnected, wipes its identity and stops.
        The host must enroll again to come back. This cannot be undone.
      </p>
    </Confirm>
  );
}
