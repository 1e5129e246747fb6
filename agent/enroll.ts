import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import { ERROR_REASONS, type ErrorReason, isErrorReason } from '../shared/errors.js';
import type { AppRouter } from '../shared/router-type.js';
import type { HostFacts } from '../shared/schemas.js';
import { tlsPortAsPlainHttp } from '../shared/tls-probe.js';
import { fullJitterDelayMs, retryHintMs, sleep } from './backoff.js';
import type { AgentConfig } from './config.js';
import { FailedAttempts } from './failed-attempts.js';
import { enrolledIdsProblem, identityProblem, UnusableIdentity } from './identity-check.js';
import type { SavedIdentity } from './identity-store.js';
import type { AgentLogger } from './log.js';
import { type AgentKeyPair, generateAgentKeyPair, thumbprintOf } from './proof.js';
import { ServerRotation } from './servers.js';
import {
  describeNetworkError,
  NotTheApi,
  RedirectRefused,
  TlsMisconfigured,
  type Transport,
  tlsMisconfiguration,
} from './transport.js';
import { AGENT_VERSION } from './version.js';

/** The server said no for good: the agent exits 3 with the reason and what to do. */
export class EnrollmentRefused extends Error {
  constructor(
    readonly reason: ErrorReason,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The server answered enrollment with a redirect, which the agent does not follow (the provisioning
 * key would go along to a URL no --server check saw). A misconfigured --server: the agent exits 2.
 */
const CHECK_SERVER =
  'check --server: it is the enrollment server\'s base URL, as `connector-server serve` prints it at start ("listening on …") or its --public-url, without /trpc or another path (unless a proxy serves it under one)';

/** --server answers, but not as the enrollment server's API: something else is at that URL. */
export class EnrollmentMisdirected extends Error {}

export class EnrollmentRedirected extends Error {
  constructor(
    readonly status: number,
    readonly location: string | null,
    server: string,
  ) {
    // The server's base URL behind the redirect, when it points to the same API path.
    const suggested = location?.replace(/\/trpc\/agent\.enroll(\?.*)?$/, '');
    super(
      `${server} answered enrollment with HTTP ${status}, a redirect to ${location ?? '(no Location header)'}; ` +
        'the agent does not follow redirects, so the provisioning key was not sent there. ' +
        `Pass the server's final URL as --server${suggested && suggested !== location ? ` (${suggested}, if that is the server)` : ''}.`,
    );
  }
}

/** Refusals worth waiting out rather than giving up on. */
/** A server certificate out of its validity period, as the TLS error says it: the server's to fix. */
const CERT_VALIDITY = /CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|validity period|certificate has expired/i;

const TRANSIENT: ReadonlySet<ErrorReason> = new Set(['RATE_LIMITED', 'STORE_UNAVAILABLE', 'INTERNAL_ERROR']);

/**
 * Enrolls this host: its key pair (the one saved for this enrollment; else a new one), the host's
 * facts, one `agent.enroll` call. Network failures and transient refusals are retried with
 * full-jitter backoff, with the same key pair, which the server answers with the same connector;
 * a refusal of the key, a redirect and a TLS misconfiguration are final (KEY_INVALID once every
 * server of the list has said it).
 */
export async function enroll(
  config: AgentConfig & { provisioningKey: string },
  transport: Transport,
  logger: AgentLogger,
  signal: AbortSignal,
  host: HostFacts,
  given?: AgentKeyPair,
): Promise<SavedIdentity | null> {
  // Several servers: one client each, tried from a random one on, the next after each failure.
  const rotation = new ServerRotation(config.servers);
  const clientFor = (server: string) =>
    createTRPCClient<AppRouter>({ links: [httpLink({ url: `${server}/trpc`, fetch: transport.fetch })] });
  const clients = new Map(config.servers.map((server) => [server, clientFor(server)] as const));
  const keyPair = given ?? (await generateAgentKeyPair());
  const failures = new FailedAttempts(Date.now, undefined, 'enroll');
  /** Servers of the list passed over: KEY_INVALID, or something other than the API there (see below). */
  const passedOver = new Set<string>();
  for (let attempt = 0; !signal.aborted; attempt++) {
    // Each attempt ends by itself if nothing answers, and on stop.
    const attemptAbort = new AbortController();
    const stopAttempt = () => attemptAbort.abort();
    signal.addEventListener('abort', stopAttempt, { once: true });
    const timer = setTimeout(stopAttempt, transport.requestTimeoutMs);
    const server = rotation.current;
    const client = clients.get(server) ?? clientFor(server);
    try {
      const result = await client.agent.enroll.mutate(
        {
          provisioningKey: config.provisioningKey,
          publicKey: keyPair.publicJwk,
          host,
          agentVersion: AGENT_VERSION,
          ...(config.name ? { name: config.name } : {}),
          // The server refuses an enrollment through a URL its sessions would refuse (PROOF_INVALID)
          // before the key is used.
          serverUrl: server,
        },
        { signal: attemptAbort.signal },
      );
      // Saved as this host's identity: only one bound to this key pair (see identityProblem).
      const unusable =
        enrolledIdsProblem(result) ??
        identityProblem(result, {
          connectorId: result.connectorId,
          groupId: result.groupId,
          jkt: await thumbprintOf(keyPair.publicJwk),
        });
      if (unusable) throw new UnusableIdentity(`answered the enrollment with ${unusable}`);
      return {
        connectorId: result.connectorId,
        groupId: result.groupId,
        server,
        ...(config.servers.length > 1 ? { servers: config.servers } : {}),
        identityToken: result.identityToken,
        identityExpiresAt: result.identityExpiresAt,
        privateJwk: keyPair.privateJwk,
        enrolledAt: new Date().toISOString(),
      };
    } catch (error) {
      if (signal.aborted) return null;
      const cause = error instanceof TRPCClientError ? error.cause : error;
      if (cause instanceof RedirectRefused)
        throw new EnrollmentRedirected(cause.status, cause.location, server);
      // A plain request to a TLS port is cut without an answer: retrying would never get one.
      const misconfigured = tlsMisconfiguration(error, server, { caGiven: config.caPem !== null });
      const tlsPort = misconfigured ? null : await tlsPortAsPlainHttp(error, server);
      const tls = misconfigured ?? (tlsPort ? `TLS: ${tlsPort} as --server` : null);
      if (tls) {
        // One server of several with a TLS mistake (its certificate, its port) is that server's to
        // fix: the others are asked before it is final.
        passedOver.add(server);
        if (config.servers.length > 1 && passedOver.size < new Set(config.servers).size) {
          logger.warn(`${tls}: asking the next server of the list`, { server });
          rotation.next();
          continue;
        }
        throw new TlsMisconfigured(tls);
      }
      const data =
        error instanceof TRPCClientError
          ? (error.data as { reason?: unknown; retryAfterSeconds?: unknown })
          : null;
      const reason = isErrorReason(data?.reason) ? data.reason : null;
      const notTheApi = cause instanceof NotTheApi ? cause : null;
      const elsewhere = notTheApi !== null && !notTheApi.transient;
      // A server of several that does not know the key may be another deployment's (a replica
      // started on another database, an old address), one reached at another URL than its
      // --public-url a stale entry, and one that is not the API a stale entry too: the others are
      // asked before it is final.
      if (
        (reason === 'KEY_INVALID' || reason === 'PROOF_INVALID' || elsewhere) &&
        config.servers.length > 1
      ) {
        passedOver.add(server);
        if (passedOver.size < new Set(config.servers).size) {
          const what = elsewhere
            ? notTheApi.message
            : reason === 'PROOF_INVALID'
              ? `refused the enrollment (PROOF_INVALID): ${(error as Error).message.replace(/\.$/, '')}`
              : 'does not know this key (KEY_INVALID)';
          logger.warn(`${server} ${what}: asking the next server of the list`, {
            server,
            ...(reason ? { reason } : {}),
          });
          rotation.next();
          continue;
        }
      }
      if (elsewhere) throw new EnrollmentMisdirected(`${server} ${notTheApi.message}: ${CHECK_SERVER}`);
      if (reason && !TRANSIENT.has(reason)) {
        throw new EnrollmentRefused(
          reason,
          `${reason}: ${(error as Error).message} — ${ERROR_REASONS[reason].hint}`,
        );
      }
      const hintMs = reason === 'RATE_LIMITED' ? retryHintMs(data?.retryAfterSeconds) : null;
      const waitMs =
        hintMs !== null
          ? hintMs + fullJitterDelayMs(0, 1000)
          : // Backoff grows a round of the list at a time: a dead replica costs one short wait.
            fullJitterDelayMs(Math.floor(attempt / config.servers.length));
      rotation.next();
      const problem =
        reason ??
        notTheApi?.message ??
        (attemptAbort.signal.aborted
          ? `no answer within ${transport.requestTimeoutMs / 1000} s`
          : describeNetworkError(error));
      // Each problem said once, then at the 2nd, 4th, 8th… attempt and every 15 min (FailedAttempts):
      // a server down for the night costs a few lines, not one a minute.
      const notice = failures.failed(
        `${server} ${problem}`,
        reason
          ? 'enrollment failed, retrying'
          : cause instanceof UnusableIdentity
            ? `enrollment failed, retrying: ${server} answered with no identity this host can keep (nothing was saved)`
            : CERT_VALIDITY.test(problem)
              ? `enrollment failed, retrying: the certificate of ${server} is outside its validity period (expired, or not yet valid): it must be renewed on the server, or this host's clock set right`
              : `enrollment failed, retrying: is the server running, and reachable from this host at ${server}?`,
      );
      if (notice)
        logger.warn(notice.message, {
          server,
          reason: problem,
          retryInSeconds: Math.round(waitMs / 100) / 10,
          ...(notice.fields.failingFor ? { failingFor: notice.fields.failingFor } : {}),
        });
      if (!(await sleep(waitMs, signal))) return null;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', stopAttempt);
    }
  }
  return null;
}
