// What an HTTP answer to an API call says about where it came from: the agent and the admin CLI
// both tell "not the API at this URL" (a configuration) from "busy, try again" the same way.

/**
 * Statuses a busy server, or a proxy in front of one that is away, answers with in its own words
 * (not the API's JSON): a retry may get through. Any other non-API answer is something else at that URL.
 */
export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 425 || status === 429;
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
