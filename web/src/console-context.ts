import { createContext, useContext } from 'react';
import type { ApiClient } from './api.js';
import type { Scope } from './session.js';

export interface ConsoleContext {
  api: ApiClient;
  adminKey: string;
  scope: Scope;
  /** Why mutating controls are disabled, or null when they are not (an admin-scope key). */
  readOnlyReason: string | null;
  /**
   * Where agents reach this server: its `--public-url` when it was given one (their proofs are bound
   * to it), else the address this console is open at.
   */
  serverUrl: string;
}

export const ConsoleContextValue = createContext<ConsoleContext | null>(null);

export function useConsole(): ConsoleContext {
  const value = useContext(ConsoleContextValue);
  if (!value) throw new TypeError('useConsole outside a signed-in console');
  return value;
}

export const READ_ONLY_REASON = 'Read-only: you signed in with a read-scope API key.';
