import { type ReactNode, useRef, useState } from 'react';
import { errorText } from '../api.js';

/**
 * A button whose action calls the server: disabled while the call runs, the failure shown beside it
 * in words. `disabledReason` disables it and says why (read-only key, expired key).
 */
export function ActionButton({
  onClick,
  children,
  className,
  disabledReason = null,
  autoFocus = false,
  type = 'button',
}: {
  onClick: () => Promise<void>;
  children: ReactNode;
  className?: string;
  disabledReason?: string | null;
  /** Takes the focus when it appears (the action a dialog is opened for). */
  autoFocus?: boolean;
  /** `submit`: its form's default button, which Enter in the form's fields clicks. */
  type?: 'button' | 'submit';
}) {
  const [busy, setBusy] = useState(false);
  // A second click before the disabled state renders must not call the server twice.
  const running = useRef(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <span className="action">
      <button
        type={type}
        className={className}
        // biome-ignore lint/a11y/noAutofocus: inside a modal dialog, the action it was opened for
        autoFocus={autoFocus}
        disabled={busy || disabledReason !== null}
        title={disabledReason ?? undefined}
        onClick={async () => {
          if (running.current) return;
          running.current = true;
          setBusy(true);
          setError(null);
          try {
            await onClick();
          } catch (failure) {
            setError(errorText(failure, 'action'));
          } finally {
            running.current = false;
            setBusy(false);
          }
        }}
      >
        {children}
      </button>
      {disabledReason && <span className="reason">{disabledReason}</span>}
      {error && (
        <span className="error" role="alert">
          {error}
        </span>
      )}
    </span>
  );
}
