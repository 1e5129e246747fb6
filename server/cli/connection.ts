import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { isForeignNotFound, isTransientStatus } from '../../shared/api-answers.js';
import { caPemProblem } from '../../shared/ca-pem.js';
import { describeNetworkError, tlsMisconfiguration } from '../../shared/network-errors.js';
import { fetchVia } from '../../shared/node-fetch.js';
import { NOT_READY_HEADER } from '../../shared/protocol.js';

/** Why the CLI could not talk to the server, in one line with the fix; `usage` is a usage error (exit 2). */
export class ConnectionProblem extends Error {
  constructor(
    message: string,
    readonly usage = false,
  ) {
    super(message);
  }
}

/**
 * The `fetch` the admin client uses for `server`: the global one, or with `--ca-file` one that trusts
 * that CA (Node's global fetch takes no CA option). Throws ConnectionProblem for a URL that is not
 * http(s) or a CA file that cannot be read.
 */
export function adminFetch(
  server: string,
  caFile: string | undefined,
  /** Where `server` came from, for the error: the flag, or CONNECTOR_SERVER. */
  from = '--server',
): typeof fetch | undefined {
  let url: URL | null = null;
  try {
    url = new URL(server);
  } catch {}
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:'))
    throw new ConnectionProblem(
      `${from} ${server}: not an http:// or https:// URL (e.g. http://127.0.0.1:7420 or https://enroll.example.com)`,
      true,
    );
  if (!caFile) return undefined;
  let ca: string;
  try {
    ca = readFileSync(caFile, 'utf8');
  } catch (error) {
    throw new ConnectionProblem(
      `--ca-file: cannot read ${caFile} (${(error as NodeJS.ErrnoException).code ?? error})`,
      true,
    );
  }
  const problem = caPemProblem(ca, caFile);
  if (problem) throw new ConnectionProblem(problem, true);
  // No keep-alive: a CLI makes a call or two and should exit at once.
  return url.protocol === 'https:' ? fetchVia(httpsRequest, { ca, agent: false }) : undefined;
}

/** How long a replica of a `--server` list has to answer /healthz before the next one is asked. */
export const REPLICA_PROBE_MS = 3000;

/**
 * The server an admin command goes to when `--server` (or CONNECTOR_SERVER, which the agent reads as
 * a list too) names several, comma-separated: the first, in the order given, that answers /healthz
 * at all (a replica that is not ready still answers, and says so). The command then goes to that one
 * only: a mutation is never sent twice. One URL is used as it is, without a probe.
 */
export async function firstAnswering(
  value: string,
  caFile: string | undefined,
  from: string,
): Promise<string> {
  const servers = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (servers.length <= 1) return servers[0] ?? value;
  const problems: string[] = [];
  for (const server of servers) {
    const transport = adminFetch(server, caFile, from) ?? fetch;
    try {
      await transport(`${server.replace(/\/+$/, '')}/healthz`, {
        signal: AbortSignal.timeout(REPLICA_PROBE_MS),
      });
      return server;
    } catch (error) {
      problems.push(`${server}: ${describeNetworkError(error)}`);
    }
  }
  throw new ConnectionProblem(
    `none of the servers ${from} names answered (${problems.join('; ')}): are they running, and are the hosts and ports right?`,
  );
}

/** How long an admin command waits for the server's answer to one call, by default (--timeout). */
export const ADMIN_CALL_TIMEOUT_S = 60;

/** A call the server did not answer within the command's bound (--timeout). */
export class NoAnswerInTime extends Error {
  override readonly name = 'NoAnswerInTime';
  constructor(readonly seconds: number) {
    super(`no answer within ${seconds} s`);
  }
}

/** What a failed call was: whether it asked for a change (which may then be saved or not). */
export interface CallKind {
  change: boolean;
}

/**
 * `transport` with each call bounded to `seconds` (a stalled or frozen server is said, not waited
 * on forever), noting in `last` whether the call in flight asks for a change (a POST).
 */
export function boundedCalls(transport: typeof fetch, seconds: number, last: CallKind): typeof fetch {
  return async (input, init) => {
    last.change = (init?.method ?? 'GET').toUpperCase() !== 'GET';
    // Aborted with a reason of its own, which fetch rejects with: the reading of the body too (past
    // the headers, outside this function) then says what it was.
    const bound = new AbortController();
    setTimeout(() => bound.abort(new NoAnswerInTime(seconds)), seconds * 1000).unref();
    const signal = init?.signal ? AbortSignal.any([init.signal, bound.signal]) : bound.signal;
    return transport(input, { ...init, signal });
  };
}

/**
 * An answer that is not the API's: `--server` names something else, or the server under a path
 * (`usage`: exit 2); or, `usage` false, a server or a proxy too busy to give one (503, 429, 502…):
 * a retry may get through (exit 1).
 */
export class NotTheApi extends Error {
  override readonly name = 'NotTheApi';
  constructor(
    message: string,
    readonly usage: boolean,
  ) {
    super(message);
  }
}

/**
 * `transport` with answers that cannot be the API's refused as NotTheApi: anything but JSON (a web
 * page, a proxy's own page), or a 404 in JSON that is no API error (this server's "not found" for a
 * path that is not its API's: `--server http://host:7420/some/path`). tRPC's client said "Unable to
 * transform response from server" and the CLI "cannot reach the server", of a server that answered.
 */
export function refusingForeignAnswers(transport: typeof fetch, server: string): typeof fetch {
  return async (input, init) => {
    const response = await transport(input, init);
    const type = response.headers.get('content-type') ?? '';
    const json = type.toLowerCase().includes('json');
    if (json && !(await isForeignNotFound(response))) return response;
    await response.body?.cancel().catch(() => {});
    const answered = `${server} answered HTTP ${response.status}${type ? ` (${type.split(';')[0]!.trim()})` : ''}`;
    if (isTransientStatus(response.status))
      throw new NotTheApi(
        `${answered} without the API's answer: the server is too busy (its connection limits) or a proxy in front of it cannot reach it; try again shortly`,
        false,
      );
    throw new NotTheApi(
      `${answered}, which is not an answer of the enrollment server's API: --server is the server's base URL, as serve prints it at start ("listening on …") or its --public-url, without /trpc or another path (unless a proxy serves it under one)`,
      true,
    );
  };
}

/** Whether `error` or one of its causes is a `type`; that one if so. */
export function causeOf<T>(error: unknown, type: new (...args: never[]) => T): T | null {
  let current: unknown = error;
  for (let depth = 0; depth < 6 && current && typeof current === 'object'; depth++) {
    if (current instanceof type) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return null;
}

/** Whether `error` or one of its causes is a NoAnswerInTime; its bound if so. */
function unansweredWithin(error: unknown): number | null {
  return causeOf(error, NoAnswerInTime)?.seconds ?? null;
}

/** Whether a call failed on TLS (a certificate not trusted or for another name, a plain port). */
export function isTlsMisconfiguration(error: unknown): boolean {
  return describeNetworkError(error).startsWith('TLS:');
}

/** What the caller of a change that got no answer must know: the server may have saved it. */
const MAY_BE_SAVED = 'the change may have been saved or not: check (list or get) before trying again';

/** What explainUnreachable knows of the command besides the error. */
export interface UnreachableContext {
  /** Whether the call asked for a change (which may then be saved or not). */
  call?: CallKind;
  /** The port was found not to speak TLS (so "use an https:// URL" would be wrong). */
  plainHttpChecked?: boolean;
  /** A --ca-file was given: an untrusted certificate is then the wrong CA, not a missing flag. */
  caGiven?: boolean;
}

/** One line on a call that got no answer from the server: what failed and what to do. */
export function explainUnreachable(
  error: unknown,
  server: string,
  { call = { change: false }, plainHttpChecked = false, caGiven = false }: UnreachableContext = {},
): string {
  const waited = unansweredWithin(error);
  if (waited !== null)
    return `the server at ${server} did not answer within ${waited} s (--timeout): it may be stalled or waiting on its storage; see its /healthz and its log${call.change ? `; ${MAY_BE_SAVED}` : ''}`;
  // The agent's words for a certificate not trusted or for another name: the names it holds, and
  // whether the --ca-file given is the wrong one.
  const misconfigured = tlsMisconfiguration(error, server, { caGiven, allowInsecureFlag: false });
  if (misconfigured) return `cannot reach the server: ${misconfigured}`;
  const detail = describeNetworkError(error);
  if (detail.startsWith('TLS:')) return `cannot reach the server at ${server}: ${detail}`;
  if (/ECONNREFUSED/.test(detail))
    return `cannot reach the server at ${server}: connection refused (nothing listens there): is the server running (connector-server serve), and are the host and port right (--server, or CONNECTOR_SERVER)?`;
  if (/ENOTFOUND|EAI_AGAIN/.test(detail))
    return `cannot reach the server at ${server}: the host name does not resolve (${detail}): check --server`;
  if (/ECONNRESET|socket hang up|HPE_|other side closed/.test(detail))
    return `the connection to the server at ${server} was cut without an HTTP answer (${detail}): the server may have stopped or restarted${call.change ? `; ${MAY_BE_SAVED}` : ''}${
      // An answer that is no HTTP (HPE_) is what a TLS port says to plain HTTP; the probe does not
      // look at those.
      plainHttpChecked && !/HPE_/.test(detail) ? '' : '; if the server serves HTTPS, use an https:// URL'
    }`;
  if (/HEADERS_TIMEOUT|BODY_TIMEOUT/.test(detail))
    return `the server at ${server} took the request but did not answer in time (${detail}): it may be stalled or waiting on its storage; see its /healthz and its log${call.change ? `; ${MAY_BE_SAVED}` : ' before trying again'}`;
  return `cannot reach the server at ${server} (${detail}): is it running? (connector-server serve)${call.change ? `; ${MAY_BE_SAVED}` : ''}`;
}

/**
 * `transport` that reports, once per command, an answer from a replica that is not ready (the
 * server's `x-connector-not-ready` header): such a replica answers from its memory, which may miss
 * changes made through other replicas while it cannot reach the database. The answer is still
 * printed: during an outage it is the best there is, and the operator is told what it is worth.
 */
export function noticingNotReady(
  transport: typeof fetch,
  server: string,
  warn: (line: string) => void,
): typeof fetch {
  let warned = false;
  return async (input, init) => {
    const response = await transport(input, init);
    const reason = response.headers.get(NOT_READY_HEADER);
    if (reason && !warned) {
      warned = true;
      warn(
        `warning: ${server} is not ready (${reason}): it answers from its memory, which may miss changes made through other replicas since; see its /healthz`,
      );
    }
    return response;
  };
}
