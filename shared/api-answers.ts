// What an HTTP answer to an API call says about where it came from: the agent and the admin CLI
// both tell "not the API at this URL" (a configuration) from "busy, try again" the same way.

/**
 * Statuses a busy server, or a proxy in front of one that is away, answers with in its own words
 * (not the API's JSON): a retry may get through. Any other non-API answer is something else at that
 * URL; so is 501 (Not Implemented): the server there does not do what was asked (a plain file
 * server, `python3 -m http.server`, answers every POST so), now or on any retry.
 */
export function isTransientStatus(status: number): boolean {
  if (status === 501) return false;
  return status >= 500 || status === 408 || status === 425 || status === 429;
}

/**
 * Whether a parsed JSON body is a tRPC answer: `{result: …}`, or `{error: …}` with a JSON-RPC error
 * code (tRPC's, -32768 to -32000) and a message. Another service's JSON (`{"detail": "Method Not
 * Allowed"}`, `{"ok": true}`) is none: tRPC's client said "Unable to transform response from
 * server" of it, which read as a network error and was retried for ever.
 */
export function isTrpcAnswer(body: unknown): boolean {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return false;
  const { result, error } = body as { result?: unknown; error?: unknown };
  if (typeof result === 'object' && result !== null) return true;
  if (typeof error !== 'object' || error === null) return false;
  const { code, message } = error as { code?: unknown; message?: unknown };
  return (
    typeof message === 'string' &&
    Number.isInteger(code) &&
    (code as number) <= -32000 &&
    (code as number) >= -32768
  );
}

/**
 * A 404 in JSON that is no API error: the path is not the API's (`--server http://host:7420/some/path`
 * reaches this server's own "not found"). An API error names its code (PROCEDURE_NOT_FOUND too).
 */
export async function isForeignNotFound(response: Response): Promise<boolean> {
  if (response.status !== 404) return false;
  const body = (await response
    .clone()
    .json()
    .catch(() => null)) as { error?: { data?: { code?: unknown } } } | null;
  return typeof body?.error?.data?.code !== 'string';
}
