import { join } from 'node:path';
import { makeTempDir, removeTempDir } from '../../lib/processes.js';
import { type Harness, tearDown } from '../harness.js';
import type { Child } from '../lib/procs.js';
import { monoMs, sleep, split } from '../lib/stats.js';
import type { ConnectResult, EnrollResult, RenewalsSeen } from '../protocol.js';
import type { RenewalResult } from '../results.js';

/**
 * Renewal: a project server of its own with a short identity lifetime; `renewalN` connectors
 * enrolled as fast as the client processes can (so their identities are issued together), all
 * connected with the agent's own `runSession`; then the wait until every agent has saved a renewed
 * identity (the server pushes it when a third of the lifetime is left, from its renewal schedule).
 * Measures the window from the first renewal to the last, and the server's event-loop delay and
 * CPU meanwhile: renewals due together must be spread, not done in one turn.
 */
export async function runRenewal(h: Harness): Promise<RenewalResult> {
  const { plan } = h;
  const n = plan.renewalN;
  const dataDir = makeTempDir('bench-renewal-');
  const server = await h.startServer('project', {
    dataDir,
    name: 'project-renewal',
    identityTtlMs: plan.renewalTtlMs,
  });
  const clients: Child[] = [];
  try {
    const admin = server.requireAdmin();
    const group = await admin.groups.create.mutate({ name: 'bench-renewal' });
    const key = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    for (let i = 0; i < plan.clientProcs; i++)
      clients.push(h.startClient('project', server.url, `renewal-client${i + 1}`));
    const shares = split(n, clients.length);
    const concurrency = split(plan.enrollConcurrency, clients.length);
    h.progress(`renewal: enrolling ${n} connectors, identity lifetime ${plan.renewalTtlMs / 1000} s`);

    // Bounded so that the first identities are still valid when their agents connect.
    const t0 = monoMs();
    const enrolled = await Promise.all(
      clients.map((client, i) =>
        client.peer.call<EnrollResult>(
          'enroll',
          {
            keys: { A: key, B: key },
            counts: { A: 0, B: shares[i]! },
            concurrency: concurrency[i],
            localAddress: h.freshAddress(),
            timeoutMs: plan.renewalTtlMs / 2,
          },
          plan.renewalTtlMs,
        ),
      ),
    );
    const enrollMs = monoMs() - t0;
    const failed = enrolled.reduce((s, r) => s + r.failed, 0);
    if (failed > 0)
      throw new Error(
        `renewal: ${failed} enrollments failed; first: ${enrolled.find((r) => r.firstError)?.firstError}`,
      );

    const t1 = monoMs();
    const connected = await Promise.all(
      clients.map((client, i) =>
        client.peer.call<ConnectResult>(
          'connect',
          {
            targets: { A: 0, B: shares[i]! },
            localAddress: h.freshAddress(),
            concurrency: plan.connectConcurrencyPerProc,
            timeoutMs: plan.renewalTtlMs / 3,
          },
          plan.renewalTtlMs,
        ),
      ),
    );
    const connectMs = monoMs() - t1;
    const notReady = connected.reduce((s, r) => s + r.notReady, 0);
    if (notReady > 0) throw new Error(`renewal: ${notReady} of ${n} sessions not ready`);
    const seenBefore = await renewalsSeen(clients);
    h.progress(
      `renewal: ${n} enrolled in ${(enrollMs / 1000).toFixed(1)} s and connected in ${(connectMs / 1000).toFixed(1)} s; ` +
        `${seenBefore.count} renewed already; waiting for the renewals`,
    );

    // The server's event-loop delay in slices of ~100 ms (read, then reset), so that the window
    // from the first renewal to the last can be told from the idle time before it.
    if (h.options.profile) await server.child.peer.call('cpuProfileStart');
    await server.resetEld();
    const tConnected = monoMs();
    const slices: Array<{ fromMs: number; toMs: number; eldMaxMs: number }> = [];
    let atFirst: { cpuMs: number } | null = seenBefore.count > 0 ? await server.takeEld() : null;
    // Every identity is due by 2/3 of its lifetime after its enrollment, so well within one lifetime.
    const deadline = tConnected + plan.renewalTtlMs + 30_000;
    let seen = seenBefore;
    let sliceFrom = tConnected;
    let lastProgress = monoMs();
    while (seen.count < n && monoMs() < deadline) {
      await sleep(100);
      // Not server.stats(): its walk of /proc/self/fd costs ~20 ms with 19,500 sockets open.
      const stats = await server.takeEld();
      const now = monoMs();
      slices.push({ fromMs: sliceFrom, toMs: now, eldMaxMs: stats.eldMaxMs });
      sliceFrom = now;
      seen = await renewalsSeen(clients);
      if (seen.count > 0 && !atFirst) atFirst = stats;
      if (now - lastProgress > 5000) {
        lastProgress = now;
        h.progress(`renewal: ${seen.count}/${n} renewed`);
      }
    }
    const end = await server.takeEld();
    if (h.options.profile)
      await server.child.peer.call('cpuProfileStop', { file: join(h.outDir, 'profile-renewal.cpuprofile') });
    slices.push({ fromMs: sliceFrom, toMs: monoMs(), eldMaxMs: end.eldMaxMs });
    const inWindow = slices.filter((x) => x.toMs >= seen.firstAtMs && x.fromMs <= seen.lastAtMs);
    const before = slices.filter((x) => x.toMs < seen.firstAtMs);
    const result: RenewalResult = {
      n,
      identityTtlMs: plan.renewalTtlMs,
      enrollMs,
      connectMs,
      renewed: seen.count,
      renewedBeforeConnected: seenBefore.count,
      firstAfterConnectedMs: seen.firstAtMs ? seen.firstAtMs - tConnected : 0,
      windowMs: seen.count > 0 ? seen.lastAtMs - seen.firstAtMs : 0,
      eldMaxMs: Math.max(0, ...inWindow.map((x) => x.eldMaxMs)),
      slicesOver100Ms: inWindow.filter((x) => x.eldMaxMs > 100).length,
      eldMaxBeforeMs: Math.max(0, ...before.map((x) => x.eldMaxMs)),
      cpuMs: atFirst ? end.cpuMs - atFirst.cpuMs : 0,
    };
    h.progress(
      `renewal: ${seen.count}/${n} renewed over ${(result.windowMs / 1000).toFixed(1)} s, ` +
        `server max event-loop delay ${result.eldMaxMs.toFixed(0)} ms (${result.eldMaxBeforeMs.toFixed(0)} ms before the first), CPU ${(result.cpuMs / 1000).toFixed(1)} s`,
    );
    if (seen.count < n) throw new Error(`renewal: only ${seen.count} of ${n} identities renewed in time`);
    return result;
  } finally {
    await tearDown(clients, server);
    removeTempDir(dataDir);
  }
}

/** Renewals saved by the sims of every client process: the total, the first and the last time. */
async function renewalsSeen(clients: Child[]): Promise<RenewalsSeen> {
  const all = await Promise.all(clients.map((c) => c.peer.call<RenewalsSeen>('renewals')));
  const seen = all.filter((r) => r.count > 0);
  return {
    count: all.reduce((s, r) => s + r.count, 0),
    firstAtMs: seen.length ? Math.min(...seen.map((r) => r.firstAtMs)) : 0,
    lastAtMs: seen.length ? Math.max(...seen.map((r) => r.lastAtMs)) : 0,
  };
}
