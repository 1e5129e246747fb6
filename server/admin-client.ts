import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import type { ErrorReason } from '../shared/errors.js';
import type { AppRouter } from '../shared/router-type.js';

export interface AdminClientOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:7420`. */
  url: string;
  /** An admin API key (`cak_…`). */
  adminKey: string;
  /** A fetch implementation (e.g. one that trusts a private CA). @default globalThis.fetch */
  fetch?: typeof fetch;
}

/**
 * A typed client of the admin API for scripts:
 * `const admin = createAdminClient({ url, adminKey }); await admin.groups.create.mutate({ name: 'Lab' })`.
 */
export function createAdminClient(options: AdminClientOptions) {
  const base = options.url.replace(/\/+$/, '');
  return createTRPCClient<AppRouter>({
    links: [
      httpLink({
        url: `${base}/trpc`,
        headers: { authorization: `Bearer ${options.adminKey}` },
        ...(options.fetch ? { fetch: options.fetch } : {}),
      }),
    ],
  });
}

export type AdminClient = ReturnType<typeof createAdminClient>;

/** The coded reason of a failed call, or null when the failure was not an API answer (network, …). */
export function reasonOf(error: unknown): ErrorReason | null {
  if (error instanceof TRPCClientError) {
    const reason = (error.data as { reason?: ErrorReason } | undefined)?.reason;
    return reason ?? null;
  }
  return null;
}

export { TRPCClientError };
