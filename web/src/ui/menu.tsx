import { useEffect, useId, useLayoutEffect, useRef, useState } from 'react';

export interface MenuItem {
  label: string;
  onSelect: () => void;
  /** Disables the item and says why (shown in the item). */
  disabledReason?: string | null;
  danger?: boolean;
}

/**
 * The row's ellipsis menu (WAI-ARIA menu button): Enter/Space/ArrowDown open it on the first item,
 * arrows move, Escape closes and returns focus to the button, Tab leaves it.
 */
export function RowMenu({ label, items }: { label: string; items: MenuItem[] }) {
  const [open, setOpen] = useState(false);
  /** Opened above the button: below it the menu would run past the bottom of the window. */
  const [upward, setUpward] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const list = useRef<HTMLDivElement>(null);
  const menuId = useId();

  // Measured before the browser paints it: a row near the bottom opens its menu upward, if that fits better.
  useLayoutEffect(() => {
    if (!open) {
      setUpward(false);
      return;
    }
    const menu = list.current?.getBoundingClientRect();
    const anchor = button.current?.getBoundingClientRect();
    if (!menu || !anchor) return;
    const below = window.innerHeight - anchor.bottom;
    setUpward(menu.bottom > window.innerHeight && anchor.top > below);
  }, [open]);

  useEffect(() => {
    if (!open) return;
    list.current?.querySelector<HTMLElement>('[role="menuitem"]')?.focus();
    const closeOnOutside = (event: MouseEvent) => {
      if (!list.current?.contains(event.target as Node) && event.target !== button.current) setOpen(false);
    };
    document.addEventListener('mousedown', closeOnOutside);
    return () => document.removeEventListener('mousedown', closeOnOutside);
  }, [open]);

  const close = (refocus: boolean) => {
    setOpen(false);
    if (refocus) button.current?.focus();
  };

  const onKeyDown = (event: React.KeyboardEvent) => {
    const entries = [...(list.current?.querySelectorAll<HTMLElement>('[role="menuitem"]') ?? [])];
    const at = entries.indexOf(document.activeElement as HTMLElement);
    const move = (to: number) => entries[(to + entries.length) % entries.length]?.focus();
    if (event.key === 'ArrowDown') move(at + 1);
    else if (event.key === 'ArrowUp') move(at - 1);
    else if (event.key === 'Home') move(0);
    else if (event.key === 'End') move(entries.length - 1);
    else if (event.key === 'Escape') close(true);
    else if (event.key === 'Tab') close(false);
    else return;
    if (event.key !== 'Tab') event.preventDefault();
  };

  return (
    <div className="row-menu">
      <button
        ref={button}
        type="button"
        className="ellipsis"
        aria-label={label}
        aria-haspopup="menu"
        aria-expanded={open}
        aria-controls={open ? menuId : undefined}
        onClick={() => setOpen(!open)}
        onKeyDown={(event) => {
          if (event.key === 'ArrowDown') {
            event.preventDefault();
            setOpen(true);
          }
        }}
      >
        ⋯
      </button>
      {open && (
        <div
          ref={list}
          id={menuId}
          role="menu"
          aria-label={label}
          onKeyDown={onKeyDown}
          className={upward ? 'menu upward' : 'menu'}
        >
          {items.map((item) => (
            <button
              key={item.label}
              type="button"
              role="menuitem"
              tabIndex={-1}
              aria-disabled={item.disabledReason ? true : undefined}
              className={item.danger ? 'danger' : undefined}
              onClick={() => {
                if (item.disabledReason) return;
                // Focus goes back to the ⋯ button first: the dialog the item opens returns it there
                // when it closes (the item itself is gone with the menu).
                close(true);
                item.onSelect();
              }}
            >
              {item.label}
              {item.disabledReason && <span className="reason"> — {item.disabledReason}</span>}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
