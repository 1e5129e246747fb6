/**
 * The signed-in admin key, kept in sessionStorage only: it dies with the tab, is never sent as a
 * cookie, and is not shared with other tabs the way localStorage would be.
 */
export type Scope = 'admin' | 'read';

export interface Session {
  adminKey: string;
  scope: Scope;
}

const STORAGE_KEY = 'connector-console.session';

export function loadSession(): Session | null {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null');
    if (typeof parsed?.adminKey === 'string' && (parsed.scope === 'admin' || parsed.scope === 'read'))
      return { adminKey: parsed.adminKey, scope: parsed.scope };
  } catch {
    // A damaged entry is the same as none: sign in again.
  }
  return null;
}

export function saveSession(session: Session): void {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
}

export function clearSession(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** `cak_<12 chars>_<secret>` → `ak_<12 chars>`: the id the API keys list shows for this key. */
export function apiKeyIdOf(adminKey: string): string | null {
  const match = /^cak_([a-z0-9]{12})_[A-Za-z0-9_-]{43}$/.exec(adminKey);
  return match ? `ak_${match[1]}` : null;
}
