/**
 * The ports fetch will not connect to (the WHATWG fetch standard's "bad ports", as Node's fetch and
 * every browser apply them): a server there cannot be enrolled with (the agent enrolls with fetch),
 * reached by the CLI or opened in the console. shared/fetch-blocked-ports.test.ts checks the list
 * against this Node's own fetch.
 */
export const FETCH_BLOCKED_PORTS: ReadonlySet<number> = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104,
  109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515,
  526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049,
  3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
]);

/** The port `url` reaches (its scheme's default when it names none). */
export function portOf(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' || url.protocol === 'wss:' ? 443 : 80;
}

/** Why clients cannot reach `port`, for a one-line refusal; null when they can. */
export function blockedPortProblem(port: number): string | null {
  if (!FETCH_BLOCKED_PORTS.has(port)) return null;
  return `port ${port} is one that fetch and browsers refuse to connect to (a "bad port" of the fetch standard, like 6000 and 10080), so agents could not enroll, nor the CLI or the console reach the server there: use another port`;
}
