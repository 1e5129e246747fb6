/**
 * `npm run demo`: the product's story told end to end on 127.0.0.1, in one temp folder, with the real
 * server CLI and the real agent. It narrates; the tests check (test/demo.test.ts runs it). A step that
 * does not happen ends the story with one line saying which, and exit status 1.
 *
 *    1. start the server                    6. disable and enable one agent live
 *    2. create a group, read its key         7. regenerate the key: the old one is refused
 *    3. get the agent as one executable      8. revoke one agent live: it exits 4, identity wiped
 *    4. run two agents with the key          9. the other one is still connected
 *    5. list them connected                 10. clean up (also on failure and on Ctrl-C)
 *
 * Why ~510 lines (its narration and bounded waits are in lib/narration.ts): the ten steps each show the command a newcomer would type and what came back
 * (about 30 lines a step), and a demo must stop cleanly wherever it fails or is interrupted, so it
 * tracks every process it starts. The checking lives in the tests, not here.
 */
import fs from 'node:fs';
import path from 'node:path';
import Table from 'cli-table3';
import { type AdminClient, createAdminClient } from '../server/admin-client.js';
import { parseDemoArgs } from './lib/demo-args.js';
import { FIRST, GROUP_NAME, LATE, SECOND, STEPS } from './lib/demo-steps.js';
import {
  adminCall,
  bold,
  dim,
  done,
  eventually,
  exitOf,
  expectThat,
  green,
  maskKey,
  note,
  quote,
  red,
  say,
  seconds,
  shell,
  stoppedTelling,
  stopTelling,
  waitForLine,
  write,
  yellow,
} from './lib/narration.js';
import {
  describeExit,
  makeTempDir,
  type Proc,
  removeTempDir,
  repoRoot,
  settleWithin,
  spawnProcess,
  spawnTs,
} from './lib/processes.js';

const DIST_BINARY = path.join(repoRoot, 'dist', 'connector-agent');
const BUILD_MS = 5 * 60_000;

let currentStep = '';
function step(n: number, print = say) {
  const [title, why] = STEPS[n - 1]!;
  currentStep = `step ${n} (${title})`;
  print();
  print(bold(`[${n}/${STEPS.length}] ${title}`));
  print(dim(why.replace(/^/gm, '      ')));
}

// ---------------------------------------------------------------------------------------------------
// The cast: every process the story starts, so the clean-up can stop each one

const started: Proc[] = [];

/** Children get our environment without CONNECTOR_* settings, which would bend the story. */
const childEnv = Object.fromEntries(
  Object.entries(process.env).filter(([name]) => !name.startsWith('CONNECTOR_')),
);

function start(proc: Proc): Proc {
  started.push(proc);
  return proc;
}

// ---------------------------------------------------------------------------------------------------
// The story

interface Agent {
  name: string;
  stateDir: string;
  proc: Proc;
  connectorId?: string;
}

class Story {
  serverUrl = '';
  server: Proc | null = null;
  admin: AdminClient | null = null;
  groupId = '';
  keyFile = '';
  /** How to run the agent: the single executable, or node + tsx when it is not to be had. */
  agentCommand: string[] = [];
  agentCwd = repoRoot;
  agentEnv: NodeJS.ProcessEnv = childEnv;
  agentKind = '';

  constructor(readonly root: string) {}

  get api(): AdminClient {
    if (!this.admin) throw new TypeError('the server has not started');
    return this.admin;
  }

  /** The admin CLI, as a user runs it, against our server and data dir (for admin.key). */
  async cli(args: string[]): Promise<Proc> {
    shell(`connector-server ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}`);
    const full = [...args, '--server', this.serverUrl, '--data-dir', path.join(this.root, 'server-data')];
    const proc = start(spawnTs('server/main.ts', full, { name: `cli ${args[0]} ${args[1]}`, env: childEnv }));
    const exit = await exitOf(proc, `\`${args.join(' ')}\``);
    if (exit.code !== 0) quote(proc.output());
    expectThat(exit.code === 0, `\`${args.join(' ')}\` failed with ${describeExit(exit)}`);
    return proc;
  }

  startAgent(name: string): Agent {
    const stateDir = path.join(this.root, name);
    fs.mkdirSync(stateDir, { mode: 0o700 });
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
    shell(`connector-agent ${args.join(' ')}`);
    const [command, ...base] = this.agentCommand as [string, ...string[]];
    const proc = spawnProcess(command, [...base, ...args], { name, cwd: this.agentCwd, env: this.agentEnv });
    return { name, stateDir, proc: start(proc) };
  }

  async showConnectors() {
    const { items } = await this.api.connectors.list.query({ groupId: this.groupId, limit: 100 });
    const table = new Table({
      head: ['NAME', 'ID', 'STATUS', 'CONNECTION', 'HOST', 'AGENT'],
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
      ]);
    }
    note(table.toString());
  }
}

async function startServer(story: Story) {
  step(1);
  const dataDir = path.join(story.root, 'server-data');
  const args = ['serve', '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0'];
  shell(`connector-server ${args.join(' ')}`);
  const server = start(spawnTs('server/main.ts', args, { name: 'server', env: childEnv }));
  const listening = await waitForLine(server, /listening on (\S+?);.*/, 'the server did not start');
  note(dim(listening));
  story.server = server;
  story.serverUrl = listening.match(/listening on (\S+?);/)![1]!;
  const adminKey = fs.readFileSync(path.join(dataDir, 'admin.key'), 'utf8').trim();
  story.admin = createAdminClient({ url: story.serverUrl, adminKey });
  done(`the server runs (pid ${server.pid}); the log names the admin key's file, never the key`);
}

async function createGroup(story: Story) {
  step(2);
  note(
    dim(
      (await story.cli(['groups', 'create', GROUP_NAME, '--description', 'npm run demo'])).output().trimEnd(),
    ),
  );
  const keyRun = await story.cli(['groups', 'key', GROUP_NAME]);
  note(dim(keyRun.stderr().trimEnd()));
  const key = keyRun.stdout().trim();
  expectThat(/^cpk_[A-Za-z0-9]+_\S+$/.test(key), '`groups key` did not print a provisioning key');
  note(`key (stdout): ${bold(maskKey(key))} ${dim('(shown masked: it is a secret)')}`);
  const group = (await story.api.groups.list.query({})).find((g) => g.name === GROUP_NAME);
  expectThat(group, `the admin API does not list the group ${GROUP_NAME}`);
  story.groupId = group.id;
  story.keyFile = path.join(story.root, 'demo.key');
  fs.writeFileSync(story.keyFile, `${key}\n`, { mode: 0o600, flag: 'wx' });
  done(`saved to ${story.keyFile} (mode 600): on argv, every user of the host could read it with \`ps\``);
}

/** Why dist/connector-agent must be built first, or null when it is newer than its sources. */
function staleBinary(): string | null {
  if (!fs.existsSync(DIST_BINARY)) return 'dist/connector-agent does not exist yet';
  const builtMs = fs.statSync(DIST_BINARY).mtimeMs;
  for (const dir of ['agent', 'shared']) {
    for (const file of fs.readdirSync(path.join(repoRoot, dir), { recursive: true }) as string[]) {
      const stat = fs.statSync(path.join(repoRoot, dir, file));
      if (stat.isFile() && stat.mtimeMs >= builtMs)
        return `dist/connector-agent is older than ${dir}/${file}`;
    }
  }
  return null;
}

async function prepareAgent(story: Story, options: { fromSource: boolean; rebuild: boolean }) {
  step(3);
  const fromSource = (why: string) => {
    const line = `${why}: the agent runs FROM SOURCE (node --import tsx agent/main.ts), not as the single executable`;
    note(yellow(bold(`⚠ ${line}`)));
    story.agentCommand = [process.execPath, '--import', 'tsx', path.join(repoRoot, 'agent', 'main.ts')];
    story.agentKind = yellow('FROM SOURCE');
  };
  if (options.fromSource) return fromSource('--from-source was given');
  const stale = options.rebuild ? '--rebuild was given' : staleBinary();
  if (stale) {
    note(`${stale}: building it (about 10 s)…`);
    shell('npm run build:agent');
    // A child process, not buildAgent() in-process: its spawnSync calls would block our Ctrl-C handling.
    const build = start(spawnTs('scripts/build-agent.ts', [], { name: 'build-agent', env: childEnv }));
    const exit = (await settleWithin(build.exited, BUILD_MS)) ?? (await build.stop());
    note(dim(build.output().trimEnd().replace(/^/gm, '│ ')));
    if (exit.code !== 0) return fromSource(`the build failed (${describeExit(exit)})`);
  } else done('dist/connector-agent is newer than every file in agent/ and shared/: reusing it');

  // Run from a link in our temp folder with no node on PATH: it needs nothing from the repo, and a
  // rebuild of dist/ meanwhile cannot swap the file under our running agents.
  const binDir = path.join(story.root, 'bin');
  const binary = path.join(binDir, 'connector-agent');
  fs.mkdirSync(binDir, { mode: 0o700 });
  await fs.promises.link(DIST_BINARY, binary).catch(() => fs.promises.copyFile(DIST_BINARY, binary));
  await fs.promises.chmod(binary, 0o755);
  const env = { PATH: '/nonexistent', HOME: story.root };
  shell(`${binary} version        ${dim('(cwd an empty temp folder, PATH=/nonexistent)')}`);
  const t0 = performance.now();
  const version = start(spawnProcess(binary, ['version'], { cwd: binDir, env }));
  const exit = await exitOf(version, 'connector-agent version');
  note(dim(version.output().trim()));
  if (exit.code !== 0)
    return fromSource(`the single executable does not run (npm run demo -- --rebuild builds it afresh)`);
  done(`the single executable runs on its own (${Math.round(performance.now() - t0)} ms to start)`);
  story.agentCommand = [binary];
  story.agentCwd = binDir;
  story.agentEnv = env;
  story.agentKind = 'the single executable';
}

async function runAgents(story: Story): Promise<[Agent, Agent]> {
  step(4);
  const agents = [story.startAgent(FIRST), story.startAgent(SECOND)] as const;
  for (const agent of agents) {
    await waitForLine(agent.proc, /connected to /, `${agent.name} did not connect`);
    note(`${bold(agent.name)} (pid ${agent.proc.pid}):`);
    quote(agent.proc.output());
  }
  return [...agents];
}

async function listConnected(story: Story, agents: Agent[]) {
  step(5);
  const connected = await eventually('both agents listed as connected', async () => {
    const { items } = await story.api.connectors.list.query({
      groupId: story.groupId,
      connection: 'connected',
      limit: 100,
    });
    const found = agents.map((a) => items.find((c) => c.name === a.name && c.host.cpus > 0));
    return found.every(Boolean) ? found : null;
  });
  agents.forEach((agent, i) => {
    agent.connectorId = connected[i]!.id;
  });
  await story.showConnectors();
  done(`connected: ${agents.map((a) => a.name).join(' and ')}`);
}

async function disableAndEnable(story: Story, agent: Agent) {
  step(6);
  for (const status of ['disabled', 'enabled'] as const) {
    const call = status === 'disabled' ? story.api.connectors.disable : story.api.connectors.enable;
    adminCall(`connectors ${status.slice(0, -1)} ${agent.connectorId}`);
    await call.mutate({ connectorId: agent.connectorId! });
    const told = new RegExp(`connector ${status} by an admin.*`);
    quote(await waitForLine(agent.proc, told, `${agent.name} was not told it is ${status}`));
  }
  expectThat(agent.proc.exit() === null, `${agent.name} exited`);
  done(`${agent.name} was disabled and enabled live, connected throughout`);
}

async function regenerateKey(story: Story) {
  step(7);
  adminCall(`groups regenerate-key ${GROUP_NAME}`);
  const before = await story.api.provisioningKeys.get.query({ groupId: story.groupId });
  const after = await story.api.provisioningKeys.regenerate.mutate({ groupId: story.groupId });
  expectThat(after.keyId !== before.keyId, 'the key did not change');
  done(`key ${before.keyId} → ${after.keyId} (${maskKey(after.key ?? '')}), expires ${after.expiresAt}`);
  note('a third agent tries to enroll with the OLD key (the key file still holds it):');
  const late = story.startAgent(LATE);
  const exit = await exitOf(late.proc, LATE);
  quote(late.proc.output().match(/.*refused.*/)?.[0] ?? late.proc.tail(3));
  expectThat(
    exit.code === 3 && /KEY_SUPERSEDED/.test(late.proc.output()),
    `${LATE} exited with ${describeExit(exit)}, not 3 (KEY_SUPERSEDED)`,
  );
  done(`${LATE} exited with code 3 (enrollment refused): KEY_SUPERSEDED`);
}

async function revoke(story: Story, agent: Agent) {
  step(8);
  const identityFile = path.join(agent.stateDir, 'identity.json');
  const keyBefore = await story.api.provisioningKeys.get.query({ groupId: story.groupId });
  adminCall(`connectors revoke ${agent.connectorId} --reason 'npm run demo'`);
  const calledAt = performance.now();
  const revoked = await story.api.connectors.revoke.mutate({
    connectorId: agent.connectorId!,
    reason: 'npm run demo',
  });
  const exit = await exitOf(agent.proc, `${agent.name} after its revoke`);
  const tookMs = Math.round(performance.now() - calledAt);
  quote(agent.proc.tail(2));
  expectThat(exit.code === 4, `${agent.name} exited with ${describeExit(exit)}, not 4 (revoked)`);
  expectThat(!fs.existsSync(identityFile), `${identityFile} is still there`);
  done(`${agent.name} exited with code 4 (revoked) ${tookMs} ms after the call; ${identityFile} is gone`);
  const receipt = revoked.termination;
  note(
    receipt?.state === 'confirmed'
      ? `the host confirmed it at ${receipt.confirmedAt} from ${receipt.confirmedFrom}`
      : 'the host has not confirmed it yet: its next connect will',
  );
  const keyAfter = await story.api.provisioningKeys.get.query({ groupId: story.groupId });
  expectThat(keyAfter.keyId !== keyBefore.keyId, "the group's key did not change");
  done(`the group key changed: ${keyBefore.keyId} → ${keyAfter.keyId}`);
}

async function survivorConnected(story: Story, agent: Agent) {
  step(9);
  const connector = await story.api.connectors.get.query({ connectorId: agent.connectorId! });
  await story.showConnectors();
  expectThat(
    connector.connection === 'connected' && agent.proc.exit() === null,
    `${agent.name} is ${connector.connection}`,
  );
  done(`${agent.name} still connected (status ${connector.status}), pid ${agent.proc.pid} still running`);
}

/** Stops every process still running (agents first, the server last), then removes the temp folder. */
async function cleanUp(story: Story) {
  step(STEPS.length, write);
  const live = started
    .filter((p) => p.exit() === null)
    .sort((a, b) => Number(a === story.server) - Number(b === story.server));
  for (const proc of live) {
    const exit = await proc.stop('SIGTERM').catch((error: Error) => error.message);
    write(
      `      stopped ${proc.name} (pid ${proc.pid}): ${typeof exit === 'string' ? exit : describeExit(exit)}`,
    );
  }
  removeTempDir(story.root);
  write(`cleaned up: pids ${started.map((p) => p.pid).join(' ')}; dirs ${story.root}`);
}

async function tell(story: Story, options: { fromSource: boolean; rebuild: boolean }) {
  await startServer(story);
  await createGroup(story);
  await prepareAgent(story, options);
  const [first, second] = await runAgents(story);
  await listConnected(story, [first, second]);
  await disableAndEnable(story, second);
  await regenerateKey(story);
  await revoke(story, first);
  await survivorConnected(story, second);
}

// ---------------------------------------------------------------------------------------------------
// Entry

async function main(argv: string[]): Promise<number> {
  const parsed = parseDemoArgs(argv);
  if ('help' in parsed) {
    write(parsed.help);
    return 0;
  }
  if ('usageError' in parsed) {
    process.stderr.write(`demo: ${parsed.usageError}\n`);
    return 2;
  }
  const options = parsed;

  const startedAt = performance.now();
  const story = new Story(makeTempDir('connector-demo-'));
  const failed = (why: string, at: string) =>
    red(bold(`demo FAILED in ${seconds(performance.now() - startedAt)} at ${at}: ${why}`));

  let cleaning: Promise<void> | null = null;
  const cleanUpOnce = () => {
    cleaning ??= cleanUp(story);
    return cleaning;
  };
  let interruptedAt = 0;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      // One Ctrl-C can arrive twice (from the terminal, and relayed by npm); a second one later means
      // it: exit now, and the exit hook kills and removes what is left.
      if (stoppedTelling()) {
        if (performance.now() - interruptedAt > 1000) process.exit(130);
        return;
      }
      stopTelling();
      interruptedAt = performance.now();
      const at = currentStep;
      write();
      write(yellow(bold(`${signal}: stopping, cleaning up first (Ctrl-C again to force)`)));
      void cleanUpOnce().finally(() => {
        write(failed(`interrupted by ${signal}`, at));
        process.exit(signal === 'SIGINT' ? 130 : 143);
      });
    });
  }

  write(bold(`Connector enrollment — the whole story, on 127.0.0.1, in ${story.root}`));
  const failure = await tell(story, options).then(
    () => null,
    (error: Error) => error.message,
  );
  if (stoppedTelling()) return new Promise<number>(() => {}); // the signal handler cleans up and exits
  const at = currentStep;
  await cleanUpOnce();
  if (failure !== null) {
    write(failed(failure, at));
    return 1;
  }
  const took = seconds(performance.now() - startedAt);
  write(green(bold(`demo OK: the whole story in ${took}, the agent as ${story.agentKind}`)));
  return 0;
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
