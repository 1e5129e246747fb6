/**
 * `npm run demo`: the whole story end to end, on loopback, in temp folders, then cleans up.
 *
 *   1. start the enrollment server (the real `serve` CLI, its own temp data dir, a free port)
 *   2. create a group and read its provisioning key (the real admin CLI)
 *   3. reuse or build the single-executable agent (dist/connector-agent); fall back to source
 *   4. run two agents with the key (from a 0600 key file, never on argv)
 *   5. list them connected
 *   6. regenerate the key: the old one is refused with KEY_SUPERSEDED
 *   7. revoke one agent live: it exits 4, its identity is wiped, the group key changes
 *   8. the other one is still connected
 *   9. clean up every process and folder (also on failure and on Ctrl-C)
 *
 * Every step checks what it expects and prints ✓ or ✗; the exit status is 0 only if all behaved.
 * Flags: --from-source (skip the binary), --rebuild (build it even if fresh), -h/--help.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Table from 'cli-table3';
import { type AdminClient, createAdminClient } from '../server/admin-client.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST_BINARY = path.join(REPO_ROOT, 'dist', 'connector-agent');
const GROUP_NAME = 'Demo';
const AGENT_NAMES = ['demo-agent-1', 'demo-agent-2'] as const;
/** The bound on every wait for the server, an agent or a CLI call. */
const WAIT_MS = 30_000;
/** How long a process gets to stop after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;
/** What the contract promises for a revoke: the live session ends within 1 s. */
const REVOKE_PROMISE_MS = 1_000;
const POLL_MS = 100;
const TOTAL_STEPS = 9;

// ---------------------------------------------------------------------------------------------------
// Output: colour only on a terminal (and never with NO_COLOR)

const COLOUR = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: string) => (text: string) => (COLOUR ? `\x1b[${code}m${text}\x1b[0m` : text);
const bold = paint('1');
const dim = paint('2');
const green = paint('32');
const red = paint('31');
const yellow = paint('33');
const cyan = paint('36');

const say = (line = '') => process.stdout.write(`${line}\n`);
const indent = (text: string, by = '      ') =>
  text
    .split('\n')
    .map((l) => `${by}${l}`)
    .join('\n');
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const errorMessage = (error: unknown) => (error instanceof Error ? error.message : String(error));
/** A key shown on screen: enough to tell keys apart, not enough to use one. */
const maskKey = (key: string) => {
  // cpk_<id>_<secret>: the secret is base64url, so it may hold '_' itself; cut after the id's '_'.
  const idEnd = key.indexOf('_', key.indexOf('_') + 1);
  return idEnd < 0 ? '…' : `${key.slice(0, idEnd + 5)}…`;
};

/** `promise`, or null if it has not settled within `ms`; the timer never holds the process open. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A step cannot go on (its prerequisites failed): the demo skips to the clean-up. */
class DemoAbort extends Error {}

// ---------------------------------------------------------------------------------------------------
// Child processes: every one is tracked, so the clean-up (and the exit hook) can stop it

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** performance.now() when the process exited. */
  atMs: number;
  error?: string;
}

interface Child {
  label: string;
  pid: number | undefined;
  proc: ChildProcess;
  stdout: string;
  stderr: string;
  /** stdout and stderr lines, in arrival order. */
  lines: string[];
  exit: Promise<ExitInfo>;
  exited: ExitInfo | null;
  /** Resolves with the first line matching `pattern`; null if the process exits or time runs out. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string | null>;
}

/** The processes still running. */
const children = new Set<Child>();
/** Every process ever started, for the report and the scan of their output. */
const everyChild: Child[] = [];
const spawnedPids: Array<{ pid: number; label: string }> = [];
let stopping = false;

function startChild(
  label: string,
  command: string,
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv },
): Child {
  if (stopping) throw new DemoAbort('stopping: no new processes');
  const proc = spawn(command, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const listeners = new Set<() => void>();
  const child: Child = {
    label,
    pid: proc.pid,
    proc,
    stdout: '',
    stderr: '',
    lines: [],
    exited: null,
    exit: new Promise<ExitInfo>((resolve) => {
      let settled = false;
      const settle = (info: ExitInfo) => {
        if (settled) return;
        settled = true;
        child.exited = info;
        children.delete(child);
        for (const l of listeners) l();
        resolve(info);
      };
      // 'exit' (not 'close'): the exit time is what the revoke timing measures.
      proc.on('exit', (code, signal) => settle({ code, signal, atMs: performance.now() }));
      proc.on('error', (error) =>
        settle({ code: null, signal: null, atMs: performance.now(), error: error.message }),
      );
    }),
    waitForLine: (pattern, timeoutMs = WAIT_MS) =>
      new Promise((resolve) => {
        const check = () => {
          const line = child.lines.find((l) => pattern.test(l));
          if (line !== undefined || child.exited) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(line ?? null);
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          resolve(null);
        }, timeoutMs);
        listeners.add(check);
        check();
      }),
  };
  const onData = (stream: 'stdout' | 'stderr') => {
    let partial = '';
    return (data: Buffer) => {
      const text = data.toString();
      child[stream] += text;
      partial += text;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      child.lines.push(...parts.filter((l) => l.trim() !== ''));
      for (const l of listeners) l();
    };
  };
  proc.stdout!.on('data', onData('stdout'));
  proc.stderr!.on('data', onData('stderr'));
  children.add(child);
  everyChild.push(child);
  if (proc.pid !== undefined) spawnedPids.push({ pid: proc.pid, label });
  return child;
}

/** SIGTERM, then SIGKILL after a bounded wait; resolves once the process is gone. */
async function stopChild(child: Child, graceMs = STOP_GRACE_MS): Promise<ExitInfo> {
  if (child.exited) return child.exited;
  child.proc.kill('SIGTERM');
  const first = await within(child.exit, graceMs);
  if (first) return first;
  child.proc.kill('SIGKILL');
  const second = await within(child.exit, graceMs);
  return second ?? { code: null, signal: null, atMs: performance.now(), error: 'did not die after SIGKILL' };
}

/** The environment for every child: ours without CONNECTOR_* settings, which would bend the demo. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('CONNECTOR_')) env[name] = value;
  }
  return env;
}

/** Runs a repo TypeScript entry point with node + tsx (no npm in between, so the pid is the process). */
function startTs(label: string, entry: string, args: string[]): Child {
  return startChild(label, process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, entry), ...args], {
    cwd: REPO_ROOT,
    env: cleanEnv(),
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Polls `probe` until it returns something truthy. `value` is null when `timeoutMs` ran out;
 * `lastError` then says what the probe last threw, if anything.
 */
async function poll<T>(
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs = WAIT_MS,
): Promise<{ value: T | null; lastError: string | null }> {
  const deadline = performance.now() + timeoutMs;
  let lastError: string | null = null;
  for (let i = 0; i < timeoutMs / POLL_MS + 1 && performance.now() < deadline; i++) {
    try {
      const value = await probe();
      if (value) return { value, lastError: null };
    } catch (error) {
      lastError = errorMessage(error);
    }
    await sleep(POLL_MS);
  }
  return { value: null, lastError };
}

// ---------------------------------------------------------------------------------------------------
// The agent, as the single executable or (fallback) from source

interface AgentRunner {
  kind: 'binary' | 'source';
  command: string;
  baseArgs: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** How it is shown in the narration. */
  shown: string;
}

/** The newest modification time of any file under `dirs` (recursively). */
function newestMtimeMs(dirs: string[]): { mtimeMs: number; file: string } {
  let newest = { mtimeMs: 0, file: '' };
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) {
        const { mtimeMs } = fs.statSync(full);
        if (mtimeMs > newest.mtimeMs) newest = { mtimeMs, file: full };
      }
    }
  };
  for (const dir of dirs) walk(dir);
  return newest;
}

/** `<binary> version` from an empty folder with no node on PATH: the binary must need nothing. */
async function runVersion(binary: string, cwd: string): Promise<{ ok: boolean; output: string; ms: number }> {
  const t0 = performance.now();
  const child = startChild('connector-agent version', binary, ['version'], {
    cwd,
    env: { PATH: '/nonexistent', HOME: cwd },
  });
  const exit = (await within(child.exit, 10_000)) ?? (await stopChild(child));
  const output = `${child.stdout}${child.stderr}`.trim();
  const ok = exit.code === 0 && output.length > 0;
  const why = exit.error ?? (exit.signal ? `killed by ${exit.signal}` : `exit ${exit.code}`);
  return { ok, output: ok ? output : `${why}${output ? `: ${output}` : ''}`, ms: performance.now() - t0 };
}

// ---------------------------------------------------------------------------------------------------
// The demo

interface Options {
  fromSource: boolean;
  rebuild: boolean;
}

interface StepResult {
  n: number;
  title: string;
  ok: boolean;
  problems: string[];
  ms: number;
}

class Demo {
  readonly startedMs = performance.now();
  readonly root: string;
  readonly dirs: string[] = [];
  readonly steps: StepResult[] = [];
  private current: StepResult | null = null;
  private cleaningUp = false;
  notes: string[] = [];

  // Filled in as the story goes.
  serverUrl = '';
  server: Child | null = null;
  admin: AdminClient | null = null;
  dataDir = '';
  groupId = '';
  keyFile = '';
  key = '';
  runner: AgentRunner | null = null;
  agents = new Map<string, { child: Child; stateDir: string; connectorId?: string }>();
  revokeMs: number | null = null;
  /** The admin key and every provisioning key seen: none may appear in a server or agent log line. */
  secrets = new Set<string>();

  constructor() {
    // One root folder (0700, from mkdtemp) holds everything: server data, key file, agent state dirs.
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'connector-demo-'));
    this.dirs.push(this.root);
  }

  /** Once the clean-up has begun (Ctrl-C), the story stops at its next line instead of printing into it. */
  private guard() {
    if (this.cleaningUp) throw new DemoAbort('interrupted');
  }

  step(n: number, title: string, why: string) {
    this.guard();
    this.beginStep(n, title, why);
  }

  private beginStep(n: number, title: string, why: string) {
    this.endStep();
    this.current = { n, title, ok: true, problems: [], ms: performance.now() };
    this.steps.push(this.current);
    say();
    say(bold(`[${n}/${TOTAL_STEPS}] ${title}`));
    say(indent(dim(why)));
  }

  endStep() {
    if (this.current) this.current.ms = performance.now() - this.current.ms;
    this.current = null;
  }

  /** Something (a signal, an unexpected error) cut the current step short. */
  cutShort(why: string) {
    if (!this.current || this.current.problems.length > 0) return;
    this.current.ok = false;
    this.current.problems.push(why);
  }

  info(line: string) {
    this.guard();
    say(indent(line));
  }

  cmd(line: string) {
    this.guard();
    say(indent(cyan(`$ ${line}`)));
  }

  /** Records an expectation: ✓ when it held, ✗ with the reason when not. */
  check(ok: boolean, what: string, whyNot = ''): boolean {
    this.guard();
    return this.mark(ok, what, whyNot);
  }

  private mark(ok: boolean, what: string, whyNot = ''): boolean {
    if (ok) say(indent(`${green('✓')} ${what}`));
    else {
      say(indent(`${red('✗')} ${what}${whyNot ? ` — ${whyNot}` : ''}`));
      this.current?.problems.push(`${what}${whyNot ? ` (${whyNot})` : ''}`);
      if (this.current) this.current.ok = false;
    }
    return ok;
  }

  /** Like check, but the story cannot go on without it. */
  require(ok: boolean, what: string, whyNot = '') {
    if (!this.check(ok, what, whyNot)) throw new DemoAbort(`${what}: ${whyNot}`);
  }

  warn(line: string) {
    this.guard();
    say(indent(`${yellow('⚠')} ${line}`));
    this.notes.push(line);
  }

  /** Shows the last lines a process printed, to explain a failure. */
  showTail(child: Child, count = 8) {
    const tail = child.lines.slice(-count);
    if (tail.length === 0) return this.info(dim(`(${child.label} printed nothing)`));
    this.info(dim(`last lines of ${child.label}:`));
    for (const line of tail) this.info(dim(`  | ${line}`));
  }

  get adminClient(): AdminClient {
    if (!this.admin) throw new DemoAbort('no admin client');
    return this.admin;
  }

  // 1 -----------------------------------------------------------------------------------------------
  async startServer() {
    this.step(
      1,
      'Start the enrollment server',
      'The real `connector-server serve` CLI as a child process, on 127.0.0.1 and a free port, with its\n' +
        'own empty data dir: first start creates the store, the signing key and an admin API key file.',
    );
    this.dataDir = path.join(this.root, 'server-data');
    fs.mkdirSync(this.dataDir, { mode: 0o700 });
    for (let attempt = 1; attempt <= 3; attempt++) {
      const port = await freePort();
      // Logs at info are kept (not shown) and scanned for secrets in step 8.
      const args = ['serve', '--data-dir', this.dataDir, '--host', '127.0.0.1', '--port', String(port)];
      args.push('--log-level', 'info');
      this.cmd(`connector-server ${args.join(' ')}`);
      const t0 = performance.now();
      const server = startTs('server', 'server/main.ts', args);
      const url = `http://127.0.0.1:${port}`;
      const { value: healthy } = await poll(async () => {
        if (server.exited) return 'exited';
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
        return res.status === 200 ? 'healthy' : null;
      });
      if (healthy === 'healthy') {
        this.server = server;
        this.serverUrl = url;
        // Said at once: the steps after would otherwise only fail on their own bounded waits.
        void server.exit.then((exit) => {
          if (this.cleaningUp) return;
          const how = exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
          this.mark(false, `the server (pid ${server.pid}) is running`, `it exited unexpectedly (${how})`);
        });
        const listening = server.lines.find((l) => /listening on/.test(l));
        if (listening) this.info(dim(`server: ${listening}`));
        this.check(
          true,
          `GET ${url}/healthz answered 200 after ${seconds(performance.now() - t0)} (pid ${server.pid})`,
        );
        break;
      }
      // Another process may have taken the port between our probe and the server's listen.
      if (server.exited && /already in use/.test(server.stderr) && attempt < 3) {
        this.info(yellow(`port ${port} was taken meanwhile; trying another`));
        continue;
      }
      await stopChild(server);
      this.showTail(server);
      this.require(
        false,
        'the server answers /healthz',
        server.exited ? `it exited (code ${server.exited.code})` : `no answer within ${seconds(WAIT_MS)}`,
      );
    }
    if (!this.server) this.require(false, 'the server started', 'no free port after 3 attempts');
    const adminKeyFile = path.join(this.dataDir, 'admin.key');
    const mode = fs.statSync(adminKeyFile).mode & 0o777;
    this.check(
      mode === 0o600,
      `it wrote the bootstrap admin key to ${adminKeyFile} (mode ${mode.toString(8)}; the log names the file, never the key)`,
      `mode is ${mode.toString(8)}, expected 600`,
    );
    const adminKey = fs.readFileSync(adminKeyFile, 'utf8').trim();
    this.secrets.add(adminKey);
    this.admin = createAdminClient({ url: this.serverUrl, adminKey });
  }

  /** The admin CLI, as a user runs it, against our server and data dir (for admin.key). */
  async cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const full = [...args, '--server', this.serverUrl, '--data-dir', this.dataDir];
    this.cmd(`connector-server ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}`);
    const child = startTs(`cli ${args.slice(0, 2).join(' ')}`, 'server/main.ts', full);
    const exit = await within(child.exit, WAIT_MS);
    if (!exit) {
      await stopChild(child);
      this.require(false, `\`${args.join(' ')}\` finished`, `still running after ${seconds(WAIT_MS)}`);
    }
    return { code: exit?.code ?? null, stdout: child.stdout, stderr: child.stderr };
  }

  // 2 -----------------------------------------------------------------------------------------------
  async createGroup() {
    this.step(
      2,
      `Create the group "${GROUP_NAME}" and read its provisioning key`,
      'A group is born with exactly one current key (active, valid 14 days). `groups key` prints the key\n' +
        'alone on stdout (so `$(…)` captures it) and its details on stderr. We save it to a 0600 file.',
    );
    const created = await this.cli(['groups', 'create', GROUP_NAME, '--description', 'npm run demo']);
    for (const line of `${created.stdout}${created.stderr}`.trim().split('\n')) this.info(dim(line));
    this.require(created.code === 0, 'the group was created', `exit ${created.code}`);

    const keyRun = await this.cli(['groups', 'key', GROUP_NAME]);
    for (const line of keyRun.stderr.trim().split('\n')) this.info(dim(line));
    this.key = keyRun.stdout.trim();
    if (this.key) this.secrets.add(this.key);
    this.info(`key (stdout): ${bold(maskKey(this.key))} ${dim('(shown masked: it is a secret)')}`);
    this.require(
      keyRun.code === 0 && /^cpk_[A-Za-z0-9]+_\S+$/.test(this.key),
      'the key is a provisioning key (cpk_<id>_<secret>)',
      `exit ${keyRun.code}, got ${this.key ? `"${maskKey(this.key)}"` : 'nothing'}`,
    );

    const group = (await this.adminClient.groups.list.query({})).find((g) => g.name === GROUP_NAME);
    this.require(Boolean(group), 'the admin API lists the group', 'not found');
    this.groupId = group!.id;
    const key = await this.adminClient.provisioningKeys.get.query({ groupId: this.groupId });
    const ttlDays = (Date.parse(key.expiresAt) - Date.parse(key.createdAt)) / 86_400_000;
    this.check(
      key.status === 'active' && key.key === this.key && Math.abs(ttlDays - 14) < 0.01,
      `the admin API agrees: ${key.keyId} is active and expires in ${ttlDays.toFixed(0)} days`,
      `status ${key.status}, ttl ${ttlDays.toFixed(2)} days, same key: ${key.key === this.key}`,
    );

    const keysDir = path.join(this.root, 'keys');
    fs.mkdirSync(keysDir, { mode: 0o700 });
    this.keyFile = path.join(keysDir, 'demo.key');
    fs.writeFileSync(this.keyFile, `${this.key}\n`, { mode: 0o600, flag: 'wx' });
    const mode = fs.statSync(this.keyFile).mode & 0o777;
    this.check(mode === 0o600, `saved to ${this.keyFile} (mode ${mode.toString(8)})`, 'not 600');
  }

  // 3 -----------------------------------------------------------------------------------------------
  async prepareAgent(options: Options) {
    this.step(
      3,
      'Get the agent as ONE executable: dist/connector-agent',
      'Operators copy a single file to a host: no Node.js, no node_modules. We reuse the binary if it is\n' +
        'newer than every file in agent/ and shared/ and its `version` runs; otherwise we build it.',
    );
    const binDir = path.join(this.root, 'bin');
    fs.mkdirSync(binDir, { mode: 0o700 });
    if (options.fromSource) {
      this.runner = this.sourceRunner('--from-source was given', true);
      return;
    }
    let binary: string | null = null;
    const reuse = options.rebuild ? null : await this.freshBinaryProblem(binDir);
    if (!options.rebuild && reuse === null) {
      binary = DIST_BINARY;
    } else {
      this.info(`${options.rebuild ? '--rebuild was given' : reuse}: building it (about 10 s)…`);
      const built = await this.build();
      if (!built.ok) {
        this.warn(`the build failed: ${built.why}`);
        this.runner = this.sourceRunner('the single executable could not be built');
        return;
      }
      binary = DIST_BINARY;
      this.check(true, `built ${path.relative(REPO_ROOT, binary)}${built.took ? ` in ${built.took}` : ''}`);
    }
    // A link (or copy) in our temp folder, run from there with no node on PATH: it needs nothing from
    // the repo, and a concurrent rebuild of dist/ cannot swap the file under our running agents.
    const local = path.join(binDir, 'connector-agent');
    try {
      await fs.promises.link(binary, local);
    } catch {
      await fs.promises.copyFile(binary, local);
      await fs.promises.chmod(local, 0o755);
    }
    this.cmd(`${local} version        ${dim('(cwd an empty temp folder, PATH=/nonexistent)')}`);
    const version = await runVersion(local, binDir);
    this.info(dim(version.output));
    if (!version.ok) {
      this.warn(`the binary does not run: ${version.output}`);
      this.runner = this.sourceRunner('the single executable does not run');
      return;
    }
    this.check(true, `the single executable runs on its own (${Math.round(version.ms)} ms to start)`);
    this.runner = {
      kind: 'binary',
      command: local,
      baseArgs: [],
      cwd: binDir,
      env: { PATH: '/nonexistent', HOME: this.root },
      shown: 'connector-agent',
    };
  }

  /** Why dist/connector-agent cannot be reused, or null if it can. */
  private async freshBinaryProblem(cwd: string): Promise<string | null> {
    if (!fs.existsSync(DIST_BINARY)) return 'dist/connector-agent does not exist yet';
    const binaryMtime = fs.statSync(DIST_BINARY).mtimeMs;
    const newest = newestMtimeMs([path.join(REPO_ROOT, 'agent'), path.join(REPO_ROOT, 'shared')]);
    if (newest.mtimeMs >= binaryMtime) {
      return `dist/connector-agent is older than ${path.relative(REPO_ROOT, newest.file)}`;
    }
    const version = await runVersion(DIST_BINARY, cwd);
    if (!version.ok) {
      const lines = version.output.split('\n');
      return `dist/connector-agent does not run (${lines.find((l) => /Error/.test(l)) ?? lines[0]})`;
    }
    this.check(
      true,
      `dist/connector-agent is newer than every file in agent/ and shared/ and runs: reusing it (built ${new Date(binaryMtime).toISOString()})`,
    );
    return null;
  }

  /**
   * `npm run build:agent` (scripts/build-agent.ts, i.e. buildAgent()) as a child process. Not called
   * in-process: the build blocks its event loop in spawnSync for seconds, and a Ctrl-C must be
   * handled (the server stopped, the temp folders removed) while it runs.
   */
  private async build(): Promise<{ ok: true; took: string | null } | { ok: false; why: string }> {
    this.cmd('npm run build:agent');
    const child = startTs('build-agent', 'scripts/build-agent.ts', []);
    let shown = 0;
    const show = () => {
      for (; shown < child.lines.length; shown++) say(dim(indent(child.lines[shown]!, '      │ ')));
    };
    child.proc.stdout!.on('data', show);
    child.proc.stderr!.on('data', show);
    // The build itself bounds each tool it runs; this bounds the whole, on a very slow machine too.
    const exit = (await within(child.exit, 5 * 60_000)) ?? (await stopChild(child));
    show();
    if (exit.code === 0) {
      return { ok: true, took: child.stdout.match(/Built \S+ in ([\d.]+ s)/)?.[1] ?? null };
    }
    const failure = child.lines.find((l) => /build-agent failed/.test(l));
    const why = exit.error ?? (exit.signal ? `killed by ${exit.signal}` : `exit ${exit.code}`);
    return { ok: false, why: failure ? failure.replace(/^.*build-agent failed:\s*/, '') : why };
  }

  /** The agent from source: asked for with --from-source, else a fallback said loud and clear. */
  private sourceRunner(why: string, asked = false): AgentRunner {
    const line = `${asked ? '' : 'FALLBACK: '}${why}, so the agent runs FROM SOURCE (node --import tsx agent/main.ts), not as the single executable`;
    say(indent(yellow(bold(`⚠ ${line}`))));
    this.notes.push(line);
    return {
      kind: 'source',
      command: process.execPath,
      baseArgs: ['--import', 'tsx', path.join(REPO_ROOT, 'agent', 'main.ts')],
      cwd: REPO_ROOT,
      env: cleanEnv(),
      shown: 'node --import tsx agent/main.ts',
    };
  }

  startAgent(name: string, stateDir: string): Child {
    const runner = this.runner!;
    const args = [
      '--server',
      this.serverUrl,
      '--key-file',
      this.keyFile,
      '--state-dir',
      stateDir,
      '--name',
      name,
    ];
    this.cmd(`${runner.shown} ${args.join(' ')}`);
    return startChild(name, runner.command, [...runner.baseArgs, ...args], {
      cwd: runner.cwd,
      env: runner.env,
    });
  }

  // 4 -----------------------------------------------------------------------------------------------
  async startAgents() {
    this.step(
      4,
      'Run two agents with the key',
      'Each agent makes an Ed25519 key pair, enrolls once with the provisioning key, saves the signed\n' +
        'identity it gets (0600) in its own state dir, then holds a websocket session. The key comes from\n' +
        'the 0600 file: on argv every user of the host could read it with `ps`.',
    );
    for (const name of AGENT_NAMES) {
      const stateDir = path.join(this.root, name);
      fs.mkdirSync(stateDir, { mode: 0o700 });
      this.agents.set(name, { child: this.startAgent(name, stateDir), stateDir });
    }
    for (const [name, agent] of this.agents) {
      const line = await agent.child.waitForLine(/connected to /);
      this.info(`${bold(name)} (pid ${agent.child.pid}), its first lines:`);
      for (const l of agent.child.lines.slice(0, 5)) this.info(dim(`  | ${l}`));
      if (!line) this.showTail(agent.child);
      this.require(
        line !== null,
        `${name} enrolled and connected`,
        agent.child.exited
          ? `it exited with code ${agent.child.exited.code}`
          : `no "connected" line within ${seconds(WAIT_MS)}`,
      );
      const identityFile = path.join(agent.stateDir, 'identity.json');
      const mode = fs.existsSync(identityFile) ? fs.statSync(identityFile).mode & 0o777 : null;
      this.check(
        mode === 0o600,
        `${name} saved its identity: ${identityFile} (mode 600)`,
        mode === null ? 'no identity file' : `mode ${mode.toString(8)}`,
      );
    }
  }

  // 5 -----------------------------------------------------------------------------------------------
  async listConnected() {
    this.step(
      5,
      'List the connectors: both connected',
      'The server knows each connector by the identity it issued; the agents reported their host facts\n' +
        'over the session. We poll connectors.list (bounded) until both show as connected.',
    );
    const { value: found, lastError } = await poll(async () => {
      const { items } = await this.adminClient.connectors.list.query({
        groupId: this.groupId,
        connection: 'connected',
        limit: 100,
      });
      const mine = AGENT_NAMES.map((name) => items.find((c) => c.name === name));
      // Wait for the host facts too: an agent still busy starting up is not the story we tell.
      return mine.every((c) => c && c.host.cpus > 0) ? mine : null;
    });
    if (found) {
      for (const c of found) this.agents.get(c!.name)!.connectorId = c!.id;
    }
    await this.printConnectors();
    this.require(
      found !== null,
      `connected: ${AGENT_NAMES.join(' and ')} (connectors.list, connection=connected)`,
      `not both connected with host facts within ${seconds(WAIT_MS)}${lastError ? ` (last error: ${lastError})` : ''}`,
    );
  }

  async printConnectors() {
    const { items } = await this.adminClient.connectors.list.query({ groupId: this.groupId, limit: 100 });
    const table = new Table({
      head: ['NAME', 'ID', 'STATUS', 'CONNECTION', 'HOST', 'AGENT', 'ENROLLED'],
      style: { head: [], border: [], compact: true },
      chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
    });
    for (const c of items) {
      table.push([
        c.name,
        c.id,
        c.status,
        c.connection,
        `${c.host.hostname} (${c.host.platform}-${c.host.arch})`,
        c.agentVersion,
        c.enrolledAt,
      ]);
    }
    say(indent(items.length ? table.toString() : '(no connectors)'));
  }

  // 6 -----------------------------------------------------------------------------------------------
  async regenerateKey() {
    this.step(
      6,
      'Regenerate the key: the old one is refused at once',
      'Regenerating replaces the key: the old one is refused with KEY_SUPERSEDED from the moment the call\n' +
        'returns, while connectors already enrolled keep their identities and stay connected.',
    );
    const before = await this.adminClient.provisioningKeys.get.query({ groupId: this.groupId });
    this.cmd(`(admin client) provisioningKeys.regenerate({ groupId: '${this.groupId}' })`);
    const after = await this.adminClient.provisioningKeys.regenerate.mutate({ groupId: this.groupId });
    if (after.key) this.secrets.add(after.key);
    this.check(
      after.keyId !== before.keyId &&
        after.key !== null &&
        after.key !== this.key &&
        after.status === 'active',
      `key id ${before.keyId} → ${after.keyId}; new key ${maskKey(after.key ?? '')}, expires ${after.expiresAt}`,
      'the key did not change',
    );

    this.info('a third agent tries to enroll with the OLD key (the same key file, which still holds it):');
    const stateDir = path.join(this.root, 'demo-agent-3');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    const third = this.startAgent('demo-agent-3', stateDir);
    const exit = await within(third.exit, WAIT_MS);
    const refusal = third.lines.find((l) => /enrollment refused/.test(l)) ?? third.lines.at(-1) ?? '';
    this.info(dim(`  | ${refusal}`));
    if (!exit) await stopChild(third);
    this.check(
      exit?.code === 3 && /KEY_SUPERSEDED/.test(third.stderr),
      'demo-agent-3 exited with code 3 (enrollment refused): KEY_SUPERSEDED',
      exit
        ? `exit code ${exit.code}${exit.error ? ` (${exit.error})` : ''}`
        : `still running after ${seconds(WAIT_MS)}`,
    );
    this.check(
      !fs.existsSync(path.join(stateDir, 'identity.json')),
      'and it has no identity',
      'an identity file exists',
    );

    // The same refusal on the wire, as curl would see it.
    this.cmd(`curl -X POST ${this.serverUrl}/trpc/agent.enroll -d '{"provisioningKey":"<old key>",…}'`);
    const res = await fetch(`${this.serverUrl}/trpc/agent.enroll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        provisioningKey: this.key,
        publicKey: generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }),
        host: {
          hostname: 'demo-direct-call',
          os: 'demo',
          platform: process.platform,
          release: os.release(),
          arch: process.arch,
          cpus: 1,
          memoryBytes: 0,
          ips: [],
          machineId: 'demo',
        },
        agentVersion: 'demo',
        name: 'demo-direct-call',
      }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    const body = (await res.json().catch(() => ({}))) as {
      error?: { message?: string; data?: { reason?: string } };
    };
    const reason = body.error?.data?.reason;
    this.info(dim(`  | HTTP ${res.status} reason=${reason ?? '-'}: ${body.error?.message ?? ''}`));
    this.check(
      reason === 'KEY_SUPERSEDED' && res.status >= 400,
      `a direct agent.enroll call with the old key: HTTP ${res.status}, KEY_SUPERSEDED`,
      `reason ${reason ?? 'none'}`,
    );
    const still = await this.adminClient.connectors.list.query({
      groupId: this.groupId,
      connection: 'connected',
      limit: 100,
    });
    this.check(
      AGENT_NAMES.every((n) => still.items.some((c) => c.name === n)),
      'both enrolled agents are still connected: regenerating never touches existing identities',
      `connected now: ${still.items.map((c) => c.name).join(', ') || 'none'}`,
    );
  }

  // 7 -----------------------------------------------------------------------------------------------
  async revokeOne() {
    const [victimName, survivorName] = AGENT_NAMES;
    const victim = this.agents.get(victimName)!;
    this.step(
      7,
      `Revoke ${victimName} live`,
      'Revoking ends its session at once: the server pushes "revoked", the agent wipes its identity and\n' +
        "exits 4, its identity is refused for ever, and the group's key is regenerated (whoever could see\n" +
        `the key that enrolled it cannot enroll more). ${survivorName} must not notice.`,
    );
    const identityFile = path.join(victim.stateDir, 'identity.json');
    this.check(fs.existsSync(identityFile), `before: ${identityFile} exists`, 'it does not');
    const keyBefore = await this.adminClient.provisioningKeys.get.query({ groupId: this.groupId });
    this.cmd(
      `(admin client) connectors.revoke({ connectorId: '${victim.connectorId}', reason: 'npm run demo' })`,
    );
    const calledAt = performance.now();
    const revoked = await this.adminClient.connectors.revoke.mutate({
      connectorId: victim.connectorId!,
      reason: 'npm run demo',
    });
    const returnedAt = performance.now();
    const exit = await within(victim.child.exit, WAIT_MS);
    for (const l of victim.child.lines.slice(-3)) this.info(dim(`  | ${l}`));
    this.require(exit !== null, `${victimName} exited`, `still running ${seconds(WAIT_MS)} after the revoke`);
    this.check(
      exit!.code === 4,
      `${victimName} exited with code 4 (revoked)`,
      `exit code ${exit!.code}${exit!.signal ? `, signal ${exit!.signal}` : ''}`,
    );
    this.revokeMs = exit!.atMs - returnedAt;
    const timing =
      this.revokeMs >= 0
        ? `${Math.round(this.revokeMs)} ms after the revoke call returned`
        : `${Math.round(-this.revokeMs)} ms before the revoke call returned (the push beat the HTTP answer)`;
    this.info(`it exited ${bold(timing)} (the call took ${Math.round(returnedAt - calledAt)} ms)`);
    if (this.revokeMs > REVOKE_PROMISE_MS) {
      this.warn(`slower than the ${REVOKE_PROMISE_MS} ms the contract promises (a busy machine?)`);
    }
    this.check(!fs.existsSync(identityFile), `after: ${identityFile} is gone (wiped)`, 'it is still there');
    this.check(
      revoked.status === 'revoked',
      `connectors.revoke answered status "${revoked.status}"`,
      'not revoked',
    );
    // The receipt: whether the agent said, before its socket closed, that it wiped its identity.
    const t = revoked.termination;
    this.info(
      t?.state === 'confirmed'
        ? `and termination "confirmed": the agent acknowledged at ${t.confirmedAt} from ${t.confirmedFrom}`
        : 'and termination "pending": the host did not acknowledge in time; its next connect will confirm it',
    );
    const keyAfter = await this.adminClient.provisioningKeys.get.query({ groupId: this.groupId });
    if (keyAfter.key) this.secrets.add(keyAfter.key);
    this.check(
      keyAfter.keyId !== keyBefore.keyId,
      `the group key changed: ${keyBefore.keyId} → ${keyAfter.keyId}`,
      `still ${keyAfter.keyId}`,
    );
  }

  // 8 -----------------------------------------------------------------------------------------------
  async survivorStillConnected() {
    const survivorName = AGENT_NAMES[1];
    const survivor = this.agents.get(survivorName)!;
    this.step(
      8,
      `${survivorName} is still connected`,
      'Revocation is per connector: the other agent keeps its identity and its session.',
    );
    // A short settle, so a session the revoke had disturbed would have time to show it.
    await sleep(500);
    const connector = await this.adminClient.connectors.get.query({ connectorId: survivor.connectorId! });
    await this.printConnectors();
    this.check(
      connector.connection === 'connected' && connector.status === 'enabled',
      `${survivorName} still connected (status ${connector.status}, connection ${connector.connection})`,
      `status ${connector.status}, connection ${connector.connection}`,
    );
    this.check(
      survivor.child.exited === null,
      `its process (pid ${survivor.child.pid}) is still running`,
      `it exited with code ${survivor.child.exited?.code}`,
    );
    this.check(
      fs.existsSync(path.join(survivor.stateDir, 'identity.json')),
      'its identity file is untouched',
      'it is gone',
    );
    const revoked = this.agents.get(AGENT_NAMES[0])!;
    if (revoked.connectorId) {
      const c = await this.adminClient.connectors.get.query({ connectorId: revoked.connectorId });
      this.check(
        c.status === 'revoked' && c.connection !== 'connected',
        `${AGENT_NAMES[0]} shows as ${c.status}, ${c.connection}`,
        `status ${c.status}, connection ${c.connection}`,
      );
    }
    // `groups key` prints the key on purpose; the server and the agents must never log one.
    const logs = everyChild.filter((c) => !c.label.startsWith('cli '));
    const lines = logs.flatMap((c) => c.lines);
    const leaks = lines.filter((l) => [...this.secrets].some((secret) => l.includes(secret)));
    this.check(
      leaks.length === 0,
      `no key in any of the ${lines.length} log lines of the server and the agents (${this.secrets.size} keys looked for)`,
      `${leaks.length} line(s) hold a key`,
    );
  }

  // 9 -----------------------------------------------------------------------------------------------
  /** Stops every process and removes every folder; safe to call more than once, and on any failure. */
  async cleanUp(expectClean: boolean) {
    stopping = true;
    this.cleaningUp = true;
    this.beginStep(
      9,
      'Clean up',
      'SIGTERM to every process still running (SIGKILL after 5 s), then the temp folders go.',
    );
    const survivor = this.agents.get(AGENT_NAMES[1]);
    const live = [...children];
    // Agents first, the server last, so the agents stop cleanly rather than see the server go.
    live.sort((a, b) => Number(a === this.server) - Number(b === this.server));
    for (const child of live) {
      const exit = await stopChild(child);
      const how = exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
      const clean = exit.code === 0;
      if (expectClean && (child === survivor?.child || child === this.server)) {
        this.mark(clean, `${child.label} (pid ${child.pid}) stopped on SIGTERM, exit ${how}`, `exit ${how}`);
      } else say(indent(`${child.label} (pid ${child.pid}) stopped, exit ${how}`));
    }
    for (const dir of this.dirs) fs.rmSync(dir, { recursive: true, force: true });
    const leftDirs = this.dirs.filter((d) => fs.existsSync(d));
    const leftPids = spawnedPids.filter(({ pid }) => isAlive(pid));
    this.mark(leftDirs.length === 0, `removed ${this.dirs.join(' ')}`, `still there: ${leftDirs.join(' ')}`);
    this.mark(
      leftPids.length === 0,
      `no process left: ${spawnedPids.map((p) => `${p.pid} (${p.label})`).join(', ')}`,
      `still alive: ${leftPids.map((p) => p.pid).join(' ')}`,
    );
    this.endStep();
    say(
      indent(`cleaned up: pids ${spawnedPids.map((p) => p.pid).join(' ')}; dirs ${this.dirs.join(' ')}`, ''),
    );
  }

  summary(aborted: string | null): number {
    const failed = this.steps.filter((s) => !s.ok);
    say();
    say(bold('Summary'));
    for (const s of this.steps) {
      say(indent(`${s.ok ? green('✓') : red('✗')} ${s.n}. ${s.title} ${dim(`(${seconds(s.ms)})`)}`, '  '));
      for (const p of s.problems) say(indent(red(p), '       '));
    }
    if (this.runner) {
      say(
        indent(
          `agent: ${this.runner.kind === 'binary' ? 'the single executable dist/connector-agent' : yellow('FROM SOURCE (fallback)')}`,
          '  ',
        ),
      );
    }
    if (this.revokeMs !== null)
      say(indent(`revoke → exit 4: ${Math.round(this.revokeMs)} ms after the call returned`, '  '));
    for (const note of this.notes) say(indent(yellow(`note: ${note}`), '  '));
    const total = seconds(performance.now() - this.startedMs);
    if (aborted || failed.length > 0) {
      say(red(bold(`demo FAILED in ${total}: ${aborted ?? `${failed.length} step(s) did not behave`}`)));
      return 1;
    }
    const fallback = this.runner?.kind === 'source' ? ' (but the agent ran FROM SOURCE, see above)' : '';
    say(green(bold(`demo OK: all ${this.steps.length} steps behaved, in ${total}${fallback}`)));
    return 0;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---------------------------------------------------------------------------------------------------
// Entry

const USAGE = `Usage: npm run demo [-- --from-source | --rebuild]

Shows the whole story on 127.0.0.1 in temp folders, then cleans up: server, group and key, the agent
as one executable, two agents connected, the old key refused after regeneration, a live revoke (exit 4),
the other agent unaffected. Exit status 0 when every step behaved, 1 otherwise, 2 for usage.

  --from-source   run the agent from source instead of the single executable
  --rebuild       build dist/connector-agent even if it is up to date
  -h, --help      this help`;

async function main(argv: string[]): Promise<number> {
  let options: Options;
  try {
    const { values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        'from-source': { type: 'boolean' },
        rebuild: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) {
      say(USAGE);
      return 0;
    }
    options = { fromSource: values['from-source'] ?? false, rebuild: values.rebuild ?? false };
  } catch (error) {
    process.stderr.write(`demo: ${errorMessage(error)}\n\n${USAGE}\n`);
    return 2;
  }

  const demo = new Demo();
  // Last resort if something escapes the clean-up below: no child outlives us, no folder stays.
  process.on('exit', () => {
    for (const child of children) child.proc.kill('SIGKILL');
    for (const dir of demo.dirs) fs.rmSync(dir, { recursive: true, force: true });
  });
  let interrupted: NodeJS.Signals | null = null;
  let interruptedAtMs = 0;
  let cleaning: Promise<void> | null = null;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (interrupted) {
        // One Ctrl-C can arrive twice: from the terminal to the whole process group, and relayed by
        // npm. A second one a moment later means it: the exit hook kills and removes the rest.
        if (performance.now() - interruptedAtMs > 1000) process.exit(130);
        return;
      }
      interrupted = signal;
      interruptedAtMs = performance.now();
      demo.cutShort(`interrupted by ${signal}`);
      say();
      say(yellow(bold(`${signal}: stopping, cleaning up first (Ctrl-C again to force)`)));
      cleaning ??= demo.cleanUp(false);
      void cleaning.then(() => {
        demo.summary(`interrupted by ${signal}`);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      });
    });
  }

  say(bold(`Connector enrollment — the whole story, on 127.0.0.1, in ${demo.root}`));
  let aborted: string | null = null;
  try {
    await demo.startServer();
    await demo.createGroup();
    await demo.prepareAgent(options);
    await demo.startAgents();
    await demo.listConnected();
    await demo.regenerateKey();
    await demo.revokeOne();
    await demo.survivorStillConnected();
  } catch (error) {
    aborted = error instanceof DemoAbort ? error.message : `unexpected error: ${errorMessage(error)}`;
    if (!interrupted) {
      demo.cutShort(aborted);
      say(indent(red(`✗ cannot go on: ${aborted}`)));
      if (!(error instanceof DemoAbort) && error instanceof Error && error.stack)
        say(dim(indent(error.stack)));
    }
  }
  if (interrupted) return new Promise<number>(() => {}); // the signal handler finishes and exits
  cleaning ??= demo.cleanUp(aborted === null);
  await cleaning;
  return demo.summary(aborted);
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
