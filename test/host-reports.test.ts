import { rm } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import type { AgentConfig } from '../agent/config.js';
import { enroll } from '../agent/enroll.js';
import { IdentityStore } from '../agent/identity-store.js';
import type { AgentLogger } from '../agent/log.js';
import { EXIT, runSession } from '../agent/session.js';
import { createTransport } from '../agent/transport.js';
import { hostFactsDigest } from '../shared/host-facts.js';
import type { HostFacts } from '../shared/schemas.js';
import { connectSim, enrollSim, hostFacts as facts } from './helpers/agent-sim.js';
import { eventually, waitConnected } from './helpers/agents.js';
import { startTestServer, type TestServer, tempDir } from './helpers/server.js';

async function hostReports(srv: TestServer): Promise<number> {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('connector_host_reports_total '));
  return line ? Number(line.split(' ')[1]) : Number.NaN;
}

async function hostOf(srv: TestServer, connectorId: string): Promise<HostFacts> {
  return (await srv.admin.connectors.get.query({ connectorId })).host;
}

/**
 * The agent's own enroll() and runSession in this process, as agent/run.ts drives them, with the
 * facts it enrolls with, the facts it starts its session with, and what each refresh collects.
 */
async function startAgent(
  srv: TestServer,
  o: { name: string; enrollWith: HostFacts; startWith?: HostFacts; reportIntervalMs?: number },
) {
  const group = await srv.admin.groups.create.mutate({ name: `g-${o.name}` });
  const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
  const stateDir = await tempDir('ce-host-');
  const store = new IdentityStore(stateDir);
  await store.ensureDir();
  const lines: string[] = [];
  const logger: AgentLogger = {
    info: (m, f) => lines.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    warn: (m, f) => lines.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
    error: (m, f) => lines.push(`error ${m} ${JSON.stringify(f ?? {})}`),
  };
  const transport = createTransport(null);
  const controller = new AbortController();
  const config = { servers: [srv.url], provisioningKey: key, name: o.name } as AgentConfig & {
    provisioningKey: string;
  };
  const identity = (await enroll(config, transport, logger, controller.signal, o.enrollWith))!;
  await store.save(identity);
  const agent = {
    connectorId: identity.connectorId,
    /** What the next refreshes collect. */
    current: o.startWith ?? o.enrollWith,
    collected: 0,
    lines,
    exit: Promise.resolve(0),
    async [Symbol.asyncDispose]() {
      controller.abort();
      expect(await agent.exit).toBe(EXIT.STOPPED);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
  agent.exit = runSession({
    identity,
    store,
    transport,
    logger,
    signal: controller.signal,
    hostFacts: o.startWith ?? o.enrollWith,
    reportIntervalMs: o.reportIntervalMs ?? 86_400_000,
    collectHostFacts: async () => {
      agent.collected++;
      return agent.current;
    },
  });
  return agent;
}

/**
 * Changes what the agent collects and waits until the server shows it: the change's report is the
 * one that follows every earlier report on the same socket, so once the server holds it, counting
 * the reports also counts any earlier one that should not have been sent.
 */
async function changeAndAwait(srv: TestServer, agent: Awaited<ReturnType<typeof startAgent>>, name: string) {
  agent.current = facts(name);
  await eventually(`${name} reported`, async () => (await hostOf(srv, agent.connectorId)).hostname === name);
}

describe('host facts are reported only when the server does not hold them', () => {
  it('ready names the digest of the facts the server holds, and a later session the reported ones', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Digests' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const enrolled = (await enrollSim(srv.url, key, 'digest')).enrolled!;
    const first = connectSim(srv.url, enrolled);
    const ready = await first.waitFor('ready');
    const held = await hostOf(srv, enrolled.connectorId);
    expect(ready).toMatchObject({ type: 'ready', hostDigest: hostFactsDigest(held) });
    const reported = facts('digest-renamed');
    await first.client.agent.report.mutate({ host: reported });
    await first.close();

    const second = connectSim(srv.url, enrolled);
    expect(await second.waitFor('ready')).toMatchObject({ hostDigest: hostFactsDigest(reported) });
    await second.close();
  });

  it('the first session after enrollment sends no report; the refresh sends facts only when they changed', async () => {
    await using srv = await startTestServer();
    const enrolledWith = facts('steady');
    await using agent = await startAgent(srv, {
      name: 'steady',
      enrollWith: enrolledWith,
      reportIntervalMs: 100,
    });
    await waitConnected(srv.admin, 'steady');
    expect(await hostOf(srv, agent.connectorId)).toEqual(enrolledWith);
    // Several refreshes collect the same facts: none of them is sent.
    await eventually('three refreshes', async () => agent.collected >= 3);
    await changeAndAwait(srv, agent, 'steady-renamed');
    expect(await hostReports(srv), agent.lines.join('\n')).toBe(1);

    // The changed facts, once the server took them, are not sent again by later refreshes.
    const confirmedAt = agent.collected;
    await eventually('three more refreshes', async () => agent.collected >= confirmedAt + 3);
    await changeAndAwait(srv, agent, 'steady-again');
    expect(await hostReports(srv), agent.lines.join('\n')).toBe(2);
  });

  it('an agent whose facts changed since enrollment reports them once, on connect', async () => {
    await using srv = await startTestServer();
    const enrolledWith = facts('mover');
    const now = { ...facts('mover'), ips: ['127.0.0.1', '10.1.2.3'], cpus: 8 };
    await using agent = await startAgent(srv, {
      name: 'mover',
      enrollWith: enrolledWith,
      startWith: now,
      reportIntervalMs: 100,
    });
    await eventually('new facts', async () => (await hostOf(srv, agent.connectorId)).cpus === 8);
    expect(await hostOf(srv, agent.connectorId)).toEqual(now);
    expect(await hostReports(srv)).toBe(1);
    // Once: refreshes that collect the same facts send nothing more.
    const reportedAt = agent.collected;
    await eventually('three refreshes', async () => agent.collected >= reportedAt + 3);
    await changeAndAwait(srv, agent, 'mover-renamed');
    expect(await hostReports(srv), agent.lines.join('\n')).toBe(2);
  });

  it('a reconnect with unchanged facts sends no report (a server restart, as in a reconnect storm)', async () => {
    const srv = await startTestServer();
    await using agent = await startAgent(srv, {
      name: 'phoenix',
      enrollWith: facts('phoenix'),
      startWith: facts('phoenix-moved'),
      reportIntervalMs: 100,
    });
    // The first session reports the facts that changed since enrollment.
    await eventually('first report', async () => (await hostReports(srv)) === 1);
    await srv.stop();
    await using again = await startTestServer({ dataDir: srv.dataDir, config: { port: srv.server.port } });
    await waitConnected(again.admin, 'phoenix', 30_000);
    const connectedAt = agent.collected;
    await eventually('three refreshes', async () => agent.collected >= connectedAt + 3);
    await changeAndAwait(again, agent, 'phoenix-renamed');
    // The restarted server counts from zero: only the change was sent.
    expect(await hostReports(again), agent.lines.join('\n')).toBe(1);
  });
});
