import { describe, expect, it } from 'vitest';
import { enrollSim } from './helpers/agent-sim.js';
import { startTestServer } from './helpers/server.js';

describe('regeneration and enrollment are atomic with respect to each other (behaviour 4)', () => {
  it('no enrollment with the old key succeeds once regenerate has returned', async () => {
    await using srv = await startTestServer({
      config: {
        rateLimits: {
          enrollPerAddressPerMinute: 100_000,
          enrollFailuresPerAddress: 100_000,
          enrollFailuresPerKey: 100_000,
          handshakeFailuresPerAddress: 100_000,
          adminAuthFailuresPerMinute: 100_000,
          sessionsPerConnectorPerMinute: 100_000,
        },
      },
    });
    const group = await srv.admin.groups.create.mutate({ name: 'Race' });
    const old = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    let regeneratedAt = 0;
    let sequence = 0;
    const results: Array<{
      startedAfterRegenerate: boolean;
      ok: boolean;
      reason?: string | undefined;
      connectorId?: string;
    }> = [];
    const worker = async () => {
      for (let i = 0; i < 40; i++) {
        const startedAt = ++sequence;
        const startedAfterRegenerate = regeneratedAt !== 0 && startedAt > regeneratedAt;
        const r = await enrollSim(srv.url, old.key!, `race-${startedAt}`);
        results.push({
          startedAfterRegenerate,
          ok: r.ok,
          reason: r.reason,
          connectorId: r.enrolled?.connectorId,
        });
      }
    };
    const regenerate = (async () => {
      // Let the enrollment stream get going, then regenerate in the middle of it.
      while (sequence < 60) await new Promise((r) => setImmediate(r));
      await srv.admin.provisioningKeys.regenerate.mutate({ groupId: group.id });
      regeneratedAt = sequence;
    })();
    await Promise.all([...Array.from({ length: 8 }, worker), regenerate]);

    const after = results.filter((r) => r.startedAfterRegenerate);
    expect(after.length).toBeGreaterThan(50);
    expect(after.filter((r) => r.ok)).toEqual([]);
    expect(new Set(after.map((r) => r.reason))).toEqual(new Set(['KEY_SUPERSEDED']));
    const succeeded = results.filter((r) => r.ok);
    expect(succeeded.length).toBeGreaterThan(0);
    // Every success is stored and was made with the old key; nothing else was stored.
    const stored = await srv.admin.connectors.list.query({ limit: 1000 });
    expect(stored.items.map((c) => c.id).sort()).toEqual(succeeded.map((r) => r.connectorId).sort());
    expect((await srv.admin.provisioningKeys.get.query({ groupId: group.id })).enrollments).toBe(0);
  });
});
