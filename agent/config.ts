import { readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { caPemProblem } from '../shared/ca-pem.js';
import { blockedPortProblem, portOf } from '../shared/fetch-blocked-ports.js';
import { ADMIN_KEY_PREFIX, keyIdOf, PROVISIONING_KEY_PREFIX } from '../shared/protocol.js';
import { nameSchema } from '../shared/schemas.js';

/** A usage problem: the agent exits 2 with this message. */
export class UsageError extends Error {}

export interface AgentConfig {
  /** Base URLs, e.g. https://enroll.example.com (no trailing slash): one, or several replicas. */
  servers: string[];
  provisioningKey: string | null;
  /** Why --key-file could not be read; only an error if the agent still has to enroll. */
  keyFileProblem: string | null;
  /** How the key was given in a way others can read it (argv, a file open to them): said when enrolling. */
  keyExposure: string | null;
  stateDir: string;
  name: string | null;
  caPem: string | null;
  allowInsecure: boolean;
  /** Present the saved identity to a --server other than those it was issued for (and save the new list). */
  allowServerChange: boolean;
  logFormat: 'text' | 'json';
  /** Why server certificates go unchecked (uncheckedTlsWarning), said at start; none when they are checked. */
  tlsUnchecked?: string | null;
}

export interface AgentFlags {
  /** Repeated and/or comma-separated. */
  server?: string[];
  key?: string;
  keyFile?: string;
  stateDir?: string;
  name?: string;
  caFile?: string;
  allowInsecure?: boolean;
  allowServerChange?: boolean;
  logJson?: boolean;
}

/**
 * The PEM of `--ca-file`, or null without it; a file that cannot be read, or that holds no
 * certificate or a private key (caPemProblem), is a usage error naming it.
 */
export async function readCaFile(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | null> {
  // The flag, else CONNECTOR_CA_FILE, as the admin CLI reads it.
  const file = flag || env.CONNECTOR_CA_FILE || undefined;
  if (!file) return null;
  const from = flag ? '--ca-file' : 'CONNECTOR_CA_FILE';
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (error) {
    throw new UsageError(`${from}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
  const problem = caPemProblem(pem, file);
  if (problem) throw new UsageError(problem);
  return pem;
}

/**
 * NODE_TLS_REJECT_UNAUTHORIZED=0 (Node's own switch, often left in an environment from a test)
 * turns off every certificate check of the process: enrollment, which carries the provisioning
 * key, and the session, which carries the identity, would go to anyone on the path who poses as
 * the server. One line saying so, or null when certificates are checked.
 */
export function uncheckedTlsWarning(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.NODE_TLS_REJECT_UNAUTHORIZED !== '0') return null;
  return (
    "NODE_TLS_REJECT_UNAUTHORIZED=0 is set: server certificates are not checked, so anyone on the way to the server can pose as it and take the provisioning key and this host's identity. " +
    'Unset it; to trust a private CA, pass --ca-file'
  );
}

/** Where a root agent keeps its state unless told otherwise. */
export const DEFAULT_ROOT_STATE_DIR = '/var/lib/connector-agent';

/**
 * `dir` as `status` and `unenroll` read it: something there that is not a directory is a usage
 * error (a file given as --state-dir read as "not enrolled", and unenroll said there was nothing
 * to do). Missing is fine: nothing was ever enrolled there.
 */
export async function readableStateDir(dir: string): Promise<string> {
  const info = await stat(dir).catch(() => null);
  if (info && !info.isDirectory())
    throw new UsageError(
      `--state-dir ${dir} is not a directory: give the agent's state dir (${DEFAULT_ROOT_STATE_DIR} as root)`,
    );
  return dir;
}

/** --state-dir, else CONNECTOR_STATE_DIR, else /var/lib/connector-agent as root, else the XDG state dir. */

export function resolveStateDir(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  uid: number | undefined = process.getuid?.(),
): string {
  // Absolute from here on: the same dir whatever the working directory of a later run.
  if (flag) return resolve(flag);
  if (env.CONNECTOR_STATE_DIR) return resolve(env.CONNECTOR_STATE_DIR);
  if (uid === 0) return DEFAULT_ROOT_STATE_DIR;
  // A relative XDG_STATE_HOME is to be ignored (the XDG spec); a home that is not a path cannot hold
  // the identity: the working directory would, and another run elsewhere would enroll again.
  if (env.XDG_STATE_HOME && isAbsolute(env.XDG_STATE_HOME))
    return join(env.XDG_STATE_HOME, 'connector-agent');
  const home = env.HOME ?? homedir();
  if (!isAbsolute(home))
    throw new UsageError(
      `no state dir: HOME is ${home ? `"${home}", not an absolute path` : 'empty'}; pass --state-dir DIR or set CONNECTOR_STATE_DIR`,
    );
  return join(home, '.local', 'state', 'connector-agent');
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  // Only `localhost` itself: a name under .localhost goes to whatever resolver the host has (glibc
  // asks DNS), so it is no promise of loopback.
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

/**
 * Checks the server URL without any lookup or connection: plain http/ws only to loopback unless
 * --allow-insecure, since the provisioning key and the identity would otherwise cross the network
 * in clear.
 */
export function checkServerUrl(raw: string, allowInsecure: boolean): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--server: "${raw}" is not a URL (e.g. https://enroll.example.com)`);
  }
  const secure = url.protocol === 'https:' || url.protocol === 'wss:';
  const plain = url.protocol === 'http:' || url.protocol === 'ws:';
  if (!secure && !plain) throw new UsageError(`--server: use an https:// URL (got ${url.protocol})`);
  if (plain && !allowInsecure && !isLoopbackHost(url.hostname)) {
    throw new UsageError(
      `--server: refusing plain ${url.protocol}// to ${url.hostname}: keys and identities would cross the network in clear. ` +
        'Use https://, or pass --allow-insecure if you really mean it.',
    );
  }
  const blocked = blockedPortProblem(portOf(url));
  if (blocked) throw new UsageError(`--server ${raw}: ${blocked}`);
  const scheme = secure ? 'https:' : 'http:';
  // A path is kept (a server behind a proxy under a prefix), but not the API's own: the agent adds it.
  const apiAt = /\/trpc(?:\/|$)/.exec(url.pathname);
  if (apiAt)
    throw new UsageError(
      `--server ${raw}: give the server's base URL, without ${url.pathname.slice(apiAt.index)} (the agent adds /trpc itself): ` +
        `--server ${scheme}//${url.host}${url.pathname.slice(0, apiAt.index)}`,
    );
  return `${scheme}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

/**
 * `--server` may name several enrollment servers (replicas of one deployment): repeated, or
 * comma-separated (the only form an environment variable has). Each URL is checked as one would be;
 * duplicates count once. Returns them in the order given.
 */
export function parseServerList(raw: readonly string[], allowInsecure: boolean): string[] {
  const urls = raw
    .flatMap((value) => value.split(','))
    .map((value) => value.trim())
    .filter((value) => value.length > 0);
  if (urls.length === 0) throw new UsageError('--server URL is required (or env CONNECTOR_SERVER)');
  if (urls.length > 16) throw new UsageError(`--server: at most 16 servers (got ${urls.length})`);
  return [...new Set(urls.map((url) => checkServerUrl(url, allowInsecure)))];
}

/** Where the key for a key file comes from, as the README shows it. */
const GET_THE_KEY = 'on the admin side, connector-server groups key GROUP prints it';

/** Why `--key-file` could not be read, and what to do about it. */
function unreadableKeyFile(file: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT')
    return `--key-file ${file} does not exist: write the group's provisioning key into it (${GET_THE_KEY}), or pass the file that holds it`;
  // A container's volume mounted from a host file that did not exist yet is a directory.
  if (code === 'EISDIR')
    return `--key-file ${file} is a directory, not a file: pass the file that holds the group's provisioning key, or write the key into a file (${GET_THE_KEY}) and pass that`;
  if (code === 'EACCES' || code === 'EPERM')
    return `--key-file ${file} cannot be read by this user (${code}): run the agent as the user that owns it (root for the systemd unit), or give the file to the agent's user (mode 0600)`;
  return `--key-file: cannot read ${file} (${code ?? error})`;
}

/** Builds the run config from flags and environment; the only place the agent reads process.env. */
export async function parseAgentConfig(
  flags: AgentFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<AgentConfig> {
  const allowInsecure = Boolean(flags.allowInsecure);
  const servers = parseServerList(
    flags.server?.length ? flags.server : env.CONNECTOR_SERVER ? [env.CONNECTOR_SERVER] : [],
    allowInsecure,
  );
  if (flags.key && flags.keyFile) throw new UsageError('pass either --key or --key-file, not both');
  let provisioningKey: string | null = flags.key ?? null;
  let keyFileProblem: string | null = null;
  let keyExposure: string | null = flags.key
    ? '--key puts the provisioning key on the command line, which every user of this host can read (ps) while the agent runs: prefer --key-file (mode 0600) or CONNECTOR_PROVISIONING_KEY'
    : null;
  // The two flags mixed up: said only if the key is needed (an enrolled agent ignores it), and a
  // key given as a file name is never echoed (it would land in the journal).
  if (flags.key && !flags.key.startsWith(PROVISIONING_KEY_PREFIX) && /[/\\]|\.key$/.test(flags.key)) {
    keyFileProblem = `--key takes the key itself (${PROVISIONING_KEY_PREFIX}…), and ${flags.key} looks like a file: use --key-file ${flags.key}`;
    provisioningKey = null;
  } else if (flags.keyFile?.startsWith(PROVISIONING_KEY_PREFIX)) {
    keyFileProblem =
      '--key-file takes a file, and the value given is a provisioning key itself (not shown here): put it in a file readable by root alone and pass that';
  } else if (flags.keyFile) {
    try {
      provisioningKey = (await readFile(flags.keyFile, 'utf8')).trim() || null;
      const mode = (await stat(flags.keyFile)).mode & 0o777;
      if (mode & 0o077)
        keyExposure = `--key-file ${flags.keyFile} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 it, or delete it once enrolled`;
      if (!provisioningKey)
        keyFileProblem = `--key-file ${flags.keyFile} is empty: write the group's provisioning key into it (${GET_THE_KEY})`;
    } catch (error) {
      // Once enrolled the key is not needed, and operators are told they may delete the file.
      keyFileProblem = unreadableKeyFile(flags.keyFile, error);
    }
  }
  provisioningKey ??= env.CONNECTOR_PROVISIONING_KEY?.trim() || null;
  // Not a provisioning key at all: said here (never echoed) rather than spent as a KEY_INVALID refusal.
  if (provisioningKey?.startsWith(ADMIN_KEY_PREFIX)) {
    keyFileProblem = `the key given is an admin API key (${ADMIN_KEY_PREFIX}…), not a group's provisioning key (${PROVISIONING_KEY_PREFIX}…): get it with connector-server groups key <group>`;
    provisioningKey = null;
  } else if (provisioningKey && keyIdOf(provisioningKey, PROVISIONING_KEY_PREFIX, 'pk') === null) {
    // Whatever the file held (a wrong path can name any file) never leaves the host.
    keyFileProblem = `the key given is not a provisioning key (${PROVISIONING_KEY_PREFIX} then 12 and 43 letters, digits, - or _; cut short or with other text around it?), so it was not sent: copy it whole from connector-server groups key <group>`;
    provisioningKey = null;
  }
  // The server would refuse it (VALIDATION_FAILED) after the key is sent: a usage error here.
  const name = flags.name === undefined ? null : nameSchema.safeParse(flags.name);
  if (name && !name.success)
    throw new UsageError(`--name: ${name.error.issues[0]?.message ?? 'not a valid name'}`);
  const caPem = await readCaFile(flags.caFile, env);
  return {
    servers,
    provisioningKey,
    keyFileProblem,
    keyExposure,
    stateDir: resolveStateDir(flags.stateDir, env),
    name: name?.data ?? null,
    caPem,
    allowInsecure,
    allowServerChange: Boolean(flags.allowServerChange),
    logFormat: flags.logJson ? 'json' : 'text',
    tlsUnchecked: uncheckedTlsWarning(env),
  };
}
