import { type ReactNode, useEffect, useId, useRef } from 'react';
import { ActionButton } from './action-button.js';

/**
 * A modal dialog on the native <dialog>: the browser traps focus inside, Escape closes it, and the
 * page behind is inert. Focus returns to whatever opened it.
 */
export function Modal({
  title,
  onClose,
  children,
  wide = false,
}: {
  title: string;
  onClose: () => void;
  children: ReactNode;
  wide?: boolean;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const dialog = ref.current;
    const opener = document.activeElement as HTMLElement | null;
    if (dialog && !dialog.open) dialog.showModal();
    return () => {
      dialog?.close();
      opener?.focus?.();
    };
  }, []);
  return (
    <dialog
      ref={ref}
      className={wide ? 'modal wide' : 'modal'}
      aria-labelledby={titleId}
      onCancel={(event) => {
        event.preventDefault();
        onClose();
      }}
    >
      <h2 id={titleId}>{title}</h2>
      {children}
    </dialog>
  );
}

/**
 * A yes/no question: says what will happen, and does it only on the confirming button, or on Enter
 * in one of its fields (a revoke's reason, a new key's policy), as in any other form: the confirming
 * button is the form's submit button. Cancel and Escape do nothing.
 */
export function Confirm({
  title,
  children,
  confirmLabel,
  danger = false,
  onConfirm,
  onClose,
}: {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}) {
  return (
    <Modal title={title} onClose={onClose}>
      {/* Enter in a field clicks the submit button (the browser's implicit submission): the action
          runs there, once, and the form itself is never sent. */}
      <form onSubmit={(event) => event.preventDefault()}>
        {children}
        <ModalActions>
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <ActionButton type="submit" className={danger ? 'danger' : 'primary'} onClick={onConfirm}>
            {confirmLabel}
          </ActionButton>
        </ModalActions>
      </form>
    </Modal>
  );
}

export function ModalActions({ children }: { children: ReactNode }) {
  return <div className="modal-actions">{children}</div>;
}

export { ActionButton };
