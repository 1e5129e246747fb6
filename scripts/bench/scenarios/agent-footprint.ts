import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, repoRoot, spawnProcess } from '../../lib/processes.js';
import type { Harness } from '../harness.js';
import { benchDir } from '../lib/procs.js';
import { monoMs, pollUntil, sleep } from '../lib/stats.js';
import type { FootprintResult, ProcessFootprint } from '../results.js';

let clockTicks = 0;
function ticksPerSecond(): number {
  if (!clockTicks) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** CPU time and resident set of another process, from /proc. */
function sample(pid: number): { cpuMs: number; rssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuMs: (ticks * 1000) / ticksPerSecond(), rssBytes: rss ? Number(rss[1]) * 1024 : 0 };
}

/**
 * The agent to measure: in the full run a single executable freshly built from this checkout (into
 * a temp dir, leaving dist/ alone); in a quick run dist/connector-agent if present; else the agent
 * from source under tsx (said so in the results).
 */
async function agentCommand(h: Harness): Promise<{ command: string; args: string[]; source: string }> {
  if (!h.plan.quick) {
    const out = makeTempDir('bench-agent-build-');
    h.progress('agent: building the single executable (npm run build:agent -- --out-dir <temp>)');
    try {
      execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build-agent.ts', '--out-dir', out], {
        cwd: repoRoot,
        stdio: ['ignore', 'ignore', 'pipe'],
        timeout: 300_000,
      });
      const binary = join(out, 'connector-agent');
      if (existsSync(binary))
        return { command: binary, args: [], source: 'single executable built from this checkout' };
    } catch (error) {
      h.progress(`agent: build failed (${(error as Error).message.split('\n')[0]}); falling back`);
    }
  }
  const dist = join(repoRoot, 'dist', 'connector-agent');
  if (existsSync(dist)) return { command: dist, args: [], source: 'dist/connector-agent (prebuilt)' };
  return {
    command: process.execPath,
    args: ['--import', 'tsx', join(repoRoot, 'agent', 'main.ts')],
    source: 'agent from source under node + tsx (no single executable found)',
  };
}

/** Scenario 6: the agent connected and idle, beside plain node holding one idle websocket. */
export async function runAgentFootprint(h: Harness): Promise<FootprintResult> {
  const agent = await agentCommand(h);
  const dataDir = makeTempDir('bench-agent-server-');
  const stateDir = makeTempDir('bench-agent-state-');
  const server = await h.startServer('project', { dataDir, name: 'project-agent' });
  const bare = await h.startServer('bare', { name: 'bare-agent' });
  try {
    const admin = server.requireAdmin();
    const group = await admin.groups.create.mutate({ name: 'footprint' });
    const keyFile = join(stateDir, 'key');
    await writeFile(keyFile, `${(await admin.provisioningKeys.get.query({ groupId: group.id })).key}\n`, {
      mode: 0o600,
    });
    const agentProc = spawnProcess(
      agent.command,
      [...agent.args, '--server', server.url, '--key-file', keyFile, '--state-dir', join(stateDir, 'agent')],
      { name: 'agent', logFile: h.logFile('agent') },
    );
    const baseProc = spawnProcess(
      process.execPath,
      [join(benchDir, 'idle-ws-client.mjs'), `${bare.url.replace(/^http/, 'ws')}/ws?id=idle&group=B`],
      { name: 'node-ws-idle', logFile: h.logFile('node-ws-idle') },
    );
    try {
      await pollUntil(
        'the agent to connect',
        async () => ((await admin.connectors.counts.query({})).connected >= 1 ? true : undefined),
        60_000,
        200,
      );
      await pollUntil(
        'the idle websocket to connect',
        async () => ((await bare.stats()).sessions >= 1 ? true : undefined),
        30_000,
        100,
      );
      // Past start-up and the first host-facts report.
      await sleep(h.plan.quick ? 1000 : 5000);
      const pids = { agent: agentProc.pid, baseline: baseProc.pid };
      const first = { agent: sample(pids.agent), baseline: sample(pids.baseline) };
      const maxRss = { agent: first.agent.rssBytes, baseline: first.baseline.rssBytes };
      const t0 = monoMs();
      h.progress(`agent: connected (${agent.source}); idle for ${h.plan.agentIdleMs / 1000} s`);
      while (monoMs() - t0 < h.plan.agentIdleMs) {
        await sleep(Math.min(1000, h.plan.agentIdleMs));
        maxRss.agent = Math.max(maxRss.agent, sample(pids.agent).rssBytes);
        maxRss.baseline = Math.max(maxRss.baseline, sample(pids.baseline).rssBytes);
      }
      const elapsed = monoMs() - t0;
      const last = { agent: sample(pids.agent), baseline: sample(pids.baseline) };
      const footprint = (who: 'agent' | 'baseline'): ProcessFootprint => ({
        rssBytes: last[who].rssBytes,
        maxRssBytes: maxRss[who],
        cpuPct: ((last[who].cpuMs - first[who].cpuMs) / elapsed) * 100,
      });
      const stillConnected = (await admin.connectors.counts.query({})).connected;
      if (stillConnected < 1) throw new Error(`the agent disconnected while idle:\n${agentProc.tail()}`);
      const result: FootprintResult = {
        source: agent.source,
        idleMs: elapsed,
        agent: footprint('agent'),
        baseline: footprint('baseline'),
      };
      h.progress(
        `agent: RSS ${(result.agent.rssBytes / 2 ** 20).toFixed(1)} MB, CPU ${result.agent.cpuPct.toFixed(2)} % ` +
          `(node + ws: ${(result.baseline.rssBytes / 2 ** 20).toFixed(1)} MB, ${result.baseline.cpuPct.toFixed(2)} %)`,
      );
      return result;
    } finally {
      await Promise.all([agentProc.stop(), baseProc.stop()]);
    }
  } finally {
    await Promise.all([server.stop().catch(() => {}), bare.stop().catch(() => {})]);
    removeTempDir(dataDir);
    removeTempDir(stateDir);
  }
}
