import { createTRPCClient, httpLink, type TRPCClientErrorLike, type TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import { NOT_READY_HEADER } from '../../shared/protocol.js';
import type { AppRouter } from '../../shared/router-type.js';

export type ApiClient = ReturnType<typeof createApiClient>;
export type ApiError = TRPCClientErrorLike<AppRouter>;

/** Calls `onUnauthorized` whenever the server answers 401: the key was deleted, expired or is wrong. */
function unauthorizedLink(onUnauthorized: (message: string) => void): TRPCLink<AppRouter> {
  return () =>
    ({ next, op }) =>
      observable((observer) =>
        next(op).subscribe({
          next: (value) => observer.next(value),
          complete: () => observer.complete(),
          error: (error) => {
            if (error.data?.httpStatus === 401) onUnauthorized(error.message);
            observer.error(error);
          },
        }),
      );
}

/**
 * The typed tRPC client over plain HTTP, one call per request (the server does not batch), with the
 * key in the Authorization header and never in a URL. Each answer tells `onReadiness` whether the
 * server is ready: a replica that is not (its database out of reach) answers from its memory and says
 * why in a header; null once an answer comes without it.
 */
export function createApiClient(
  adminKey: string,
  onUnauthorized: (message: string) => void,
  onReadiness: (notReady: string | null) => void = () => {},
) {
  const noticing: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    onReadiness(response.headers.get(NOT_READY_HEADER));
    return response;
  };
  return createTRPCClient<AppRouter>({
    links: [
      unauthorizedLink(onUnauthorized),
      httpLink({ url: '/trpc', headers: () => ({ authorization: `Bearer ${adminKey}` }), fetch: noticing }),
    ],
  });
}

/**
 * The words to show for a failed call: the server's message and, when it gives one, its reason code.
 * A call that got no answer at all says so (the browser's own words, "Failed to fetch", say nothing
 * of what to do).
 */
export function errorText(error: unknown, of: 'load' | 'action' = 'load'): string {
  const reason = errorReason(error);
  const message = error instanceof Error ? error.message : String(error);
  if (
    !reason &&
    !(error as { data?: unknown } | null)?.data &&
    /failed to fetch|networkerror|load failed/i.test(message)
  )
    // A page's data is fetched again by itself; an action is not (it may not be wanted any more).
    return of === 'load'
      ? 'The server cannot be reached: it may be stopped or restarting, or the network is down. This page tries again by itself; what it shows may be out of date meanwhile.'
      : 'The server cannot be reached: it may be stopped or restarting, or the network is down. Try again once it is back (this page shows when it is).';
  return reason ? `${message} (${reason})` : message;
}

/** The server's reason code for a failed call (`GROUP_NOT_FOUND`, …), or null. */
export function errorReason(error: unknown): string | null {
  const reason = (error as { data?: { reason?: unknown } } | null)?.data?.reason;
  return typeof reason === 'string' ? reason : null;
}
