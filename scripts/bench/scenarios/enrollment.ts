import { join } from 'node:path';
import { generateKeyPair, SignJWT } from 'jose';
import type { Harness, ServerHandle } from '../harness.js';
import { connectEachOnce } from '../lib/first-connect.js';
import type { Child } from '../lib/procs.js';
import { monoMs, split, summarize } from '../lib/stats.js';
import { identitiesNeeded } from '../plan.js';
import type { EnrollResult, Group } from '../protocol.js';
import type { EnrollmentResult, ReadsResult } from '../results.js';
import { measureReads } from './admin-reads.js';
import type { ProjectSetup } from './fleet.js';

/**
 * The project's first phase: groups A and B, then every connector the fleet will need, enrolled
 * for real by client processes through `agent.enroll` (the agent's own enrollment code). Scenario 4
 * is the slice enrolled once `storedBeforeEnrollMeasure` are stored, beside jose's signing rate
 * measured in this process just before; scenario 7 reads the real store at that size.
 */
export async function runEnrollment(
  h: Harness,
  dataDir: string,
): Promise<{ setup: ProjectSetup; enrollment: EnrollmentResult; reads: ReadsResult[] }> {
  const { plan } = h;
  const server = await h.startServer('project', { dataDir, name: 'project-enroll' });
  const clients: Child[] = [];
  let handedOver = false;
  try {
    const admin = server.requireAdmin();
    const groupA = await admin.groups.create.mutate({ name: 'bench-A', description: 'mass-revoked' });
    const groupB = await admin.groups.create.mutate({ name: 'bench-B' });
    const keys: Partial<Record<Group, string>> = {
      A: (await admin.provisioningKeys.get.query({ groupId: groupA.id })).key!,
      B: (await admin.provisioningKeys.get.query({ groupId: groupB.id })).key!,
    };
    for (let i = 0; i < plan.clientProcs; i++)
      clients.push(h.startClient('project', server.url, `project-client${i + 1}`));

    const needed = identitiesNeeded(plan);
    const p = plan.clientProcs;
    const aShare = split(needed.A, p);
    // Slack per process: shares of targets and of revokes round differently.
    const bShare = split(needed.B, p).map((b) => b + plan.steps.length + 2);
    const b1 = split(Math.max(0, plan.storedBeforeEnrollMeasure - needed.A), p);
    const b2 = split(plan.enrollMeasureCount, p);
    const concurrency = split(plan.enrollConcurrency, p);
    let totalEnrolled = 0;
    let totalMs = 0;

    const enrollRound = async (what: string, counts: Array<Partial<Record<Group, number>>>) => {
      const t0 = monoMs();
      const total = counts.reduce((s, c) => s + (c.A ?? 0) + (c.B ?? 0), 0);
      h.progress(`project: enrolling ${total} connectors (${what}, ${plan.enrollConcurrency} at a time)`);
      const ticker = setInterval(() => {
        server
          .stats()
          .then((s) =>
            h.progress(`project: enrolling… ${s.store?.transactions ?? '?'} store transactions so far`),
          )
          .catch(() => {});
      }, 5000);
      let results: EnrollResult[];
      try {
        results = await Promise.all(
          clients.map((client, i) =>
            client.peer.call<EnrollResult>(
              'enroll',
              {
                keys,
                counts: counts[i],
                concurrency: concurrency[i],
                localAddress: h.freshAddress(),
                timeoutMs: 600_000,
              },
              630_000,
            ),
          ),
        );
      } finally {
        clearInterval(ticker);
      }
      const ms = monoMs() - t0;
      const enrolled = results.reduce((s, r) => s + r.enrolled, 0);
      const failed = results.reduce((s, r) => s + r.failed, 0);
      totalEnrolled += enrolled;
      totalMs += ms;
      if (failed > 0)
        throw new Error(
          `enrollment: ${failed} failed; first: ${results.find((r) => r.firstError)?.firstError}`,
        );
      return { ms, enrolled, results };
    };

    await enrollRound(
      'setup',
      clients.map((_, i) => ({ A: aShare[i]!, B: b1[i]! })),
    );
    const reads = [await measureReads(h, server, totalEnrolled, false)];

    const sign = await measureSigning(plan.signBaselineMs);
    h.progress(
      `jose EdDSA SignJWT here: ${sign.sequential.toFixed(0)}/s one at a time, ${sign.concurrent.toFixed(0)}/s 64 in flight`,
    );

    await server.resetEld();
    if (h.options.profile) await server.child.peer.call('cpuProfileStart');
    const before = await server.stats();
    const measured = await enrollRound(
      `measured, ${totalEnrolled} stored`,
      clients.map((_, i) => ({ A: 0, B: b2[i]! })),
    );
    const after = await server.stats();
    if (h.options.profile)
      await server.child.peer.call('cpuProfileStop', {
        file: join(h.outDir, 'profile-enrollment.cpuprofile'),
      });
    const latencies = measured.results.flatMap((r) => r.latenciesMs);
    const enrollment: EnrollmentResult = {
      storedBefore: totalEnrolled - measured.enrolled,
      count: measured.enrolled,
      concurrency: plan.enrollConcurrency,
      perSecond: measured.enrolled / (measured.ms / 1000),
      latencyMs: summarize(latencies),
      serverCpuUsPerEnrollment: ((after.cpuMs - before.cpuMs) * 1000) / measured.enrolled,
      serverSystemCpuUsPerEnrollment: ((after.cpuSystemMs - before.cpuSystemMs) * 1000) / measured.enrolled,
      storeTransactions: (after.store?.transactions ?? 0) - (before.store?.transactions ?? 0),
      storeWrites: (after.store?.writes ?? 0) - (before.store?.writes ?? 0),
      eldMaxMs: after.eld.maxMs,
      failed: 0,
      firstError: null,
      signPerSecond: sign.sequential,
      signPerSecondConcurrent: sign.concurrent,
      totalEnrolled: 0,
      setupPerSecond: 0,
      firstConnect: null,
    };
    h.progress(
      `project: ${enrollment.perSecond.toFixed(0)} enrollments/s with ${enrollment.storedBefore} stored ` +
        `(p99 ${enrollment.latencyMs.p99.toFixed(0)} ms, server CPU ${enrollment.serverCpuUsPerEnrollment.toFixed(0)} µs each, ` +
        `${enrollment.serverSystemCpuUsPerEnrollment.toFixed(0)} µs of it in the kernel, ${enrollment.storeWrites} writes for ${enrollment.storeTransactions} transactions, ` +
        `max event-loop delay ${enrollment.eldMaxMs.toFixed(0)} ms)`,
    );

    await enrollRound(
      'the rest of the fleet',
      clients.map((_, i) => ({ A: 0, B: bShare[i]! - b1[i]! - b2[i]! })),
    );
    enrollment.totalEnrolled = totalEnrolled;
    enrollment.setupPerSecond = totalEnrolled / (totalMs / 1000);
    enrollment.firstConnect = await firstConnections(h, server, clients);
    reads.push(await measureReads(h, server, totalEnrolled, false));
    await server.stop();
    handedOver = true;
    return {
      setup: { dataDir, port: server.ready.port, clients, groupIds: { A: groupA.id, B: groupB.id, C: '' } },
      enrollment,
      reads,
    };
  } finally {
    if (!handedOver) {
      await Promise.all(clients.map((c) => c.stop('SIGKILL')));
      await server.stop().catch(() => {});
    }
  }
}

/**
 * Connects every enrolled connector once and closes it again, in waves: a connector's first session
 * may do one-off bookkeeping (recording its first connection), so the sessions scenario then measures
 * the sessions a server sees every day (reconnects), and this the first ones.
 */
async function firstConnections(
  h: Harness,
  server: ServerHandle,
  clients: Child[],
): Promise<NonNullable<EnrollmentResult['firstConnect']>> {
  h.progress('project: first session of every enrolled connector (connect once, close)');
  await server.resetEld();
  if (h.options.profile) await server.child.peer.call('cpuProfileStart');
  const before = await server.stats();
  const t0 = monoMs();
  const results = await Promise.all(clients.map((client) => connectEachOnce(h, client)));
  const after = await server.stats();
  if (h.options.profile)
    await server.child.peer.call('cpuProfileStop', {
      file: join(h.outDir, 'profile-first-sessions.cpuprofile'),
    });
  const count = results.reduce((s, r) => s + r.connected, 0);
  const notReady = results.reduce((s, r) => s + r.notReady, 0);
  if (notReady > 0) throw new Error(`first sessions: ${notReady} did not become ready`);
  const result = {
    count,
    cpuUs: ((after.cpuMs - before.cpuMs) * 1000) / count,
    systemCpuUs: ((after.cpuSystemMs - before.cpuSystemMs) * 1000) / count,
    durationMs: monoMs() - t0,
    eldMaxMs: after.eld.maxMs,
  };
  h.progress(
    `project: ${count} first sessions in ${(result.durationMs / 1000).toFixed(1)} s, ${result.cpuUs.toFixed(0)} µs server CPU each ` +
      `(connect and close), max event-loop delay ${result.eldMaxMs.toFixed(0)} ms`,
  );
  return result;
}

/** jose EdDSA SignJWT with an identity-sized payload, in this process: one at a time, and 64 in flight. */
export async function measureSigning(
  durationMs: number,
): Promise<{ sequential: number; concurrent: number }> {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const sign = () =>
    new SignJWT({
      group_id: 'grp_0123456789abcdef',
      provisioning_key_id: 'pk_0123456789abcdef',
      cnf: { jkt: 'x'.repeat(43) },
    })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'bench' })
      .setIssuer('connector-enrollment')
      .setSubject('con_0123456789abcdef')
      .setAudience('connector-session')
      .setIssuedAt()
      .setExpirationTime('365d')
      .sign(privateKey);
  for (let i = 0; i < 200; i++) await sign();
  let count = 0;
  let t0 = monoMs();
  while (monoMs() - t0 < durationMs) {
    await sign();
    count++;
  }
  const sequential = count / ((monoMs() - t0) / 1000);
  count = 0;
  t0 = monoMs();
  const worker = async () => {
    while (monoMs() - t0 < durationMs) {
      await sign();
      count++;
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return { sequential, concurrent: count / ((monoMs() - t0) / 1000) };
}
