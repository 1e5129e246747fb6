import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createAdminClient } from '../server/admin-client.js';
import { loadStoreFiles } from '../server/store/journal.js';
import { enrollSim } from './helpers/agent-sim.js';
import { spawnServer } from './helpers/processes.js';
import { tempDir } from './helpers/server.js';

describe('durability (behaviour 13)', () => {
  it('kill -9 in the middle of a burst of mutations loses nothing acknowledged and never tears the file', async () => {
    const dataDir = await tempDir();
    const acknowledgedGroups = new Set<string>();
    const acknowledgedConnectors = new Set<string>();
    const revoked = new Set<string>();
    let port: number | undefined;
    for (let round = 0; round < 3; round++) {
      const server = await spawnServer(dataDir, ['--enroll-rate-per-minute', '100000'], port);
      port = server.port;
      const admin = createAdminClient({ url: server.url, adminKey: server.adminKey });
      const group = await admin.groups.create.mutate({ name: `Round ${round}` });
      acknowledgedGroups.add(group.id);
      // Each revocation regenerates the group's key: enrollers follow the current one.
      let key = (await admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      let stop = false;
      const workers = [
        ...Array.from({ length: 4 }, async (_, w) => {
          for (let i = 0; i < 1000 && !stop; i++) {
            const g = await admin.groups.create.mutate({ name: `r${round}-w${w}-${i}` }).catch(() => null);
            if (g) acknowledgedGroups.add(g.id);
          }
        }),
        ...Array.from({ length: 4 }, async () => {
          for (let i = 0; i < 1000 && !stop; i++) {
            const r = await enrollSim(server.url, key).catch(() => null);
            if (r?.ok) acknowledgedConnectors.add(r.enrolled!.connectorId);
            // A revoke superseded the key: fetch the current one rather than spin on refusals,
            // which would use up the address's failure allowance (60) within one round.
            else if (r?.reason === 'KEY_SUPERSEDED') {
              const current = await admin.provisioningKeys.get.query({ groupId: group.id }).catch(() => null);
              if (current?.key) key = current.key;
            }
          }
        }),
        (async () => {
          for (let i = 0; i < 1000 && !stop; i++) {
            const victim = [...acknowledgedConnectors].find((id) => !revoked.has(id));
            if (!victim) {
              await new Promise((r) => setTimeout(r, 5));
              continue;
            }
            const done = await admin.connectors.revoke.mutate({ connectorId: victim }).catch(() => null);
            if (!done) continue;
            revoked.add(victim);
            const current = await admin.provisioningKeys.get.query({ groupId: group.id }).catch(() => null);
            if (current?.key) key = current.key;
          }
        })(),
      ];
      // Kill once a fair amount of work has been acknowledged, while the workers are still going.
      const groupTarget = acknowledgedGroups.size + 40;
      const connectorTarget = acknowledgedConnectors.size + 5;
      for (let i = 0; i < 3000; i++) {
        if (acknowledgedGroups.size >= groupTarget && acknowledgedConnectors.size >= connectorTarget) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      server.kill('SIGKILL');
      await server.exited;
      stop = true;
      await Promise.all(workers);

      // The data file and its journal parse, and every acknowledged change is in them.
      const data = loadStoreFiles(join(dataDir, 'store.json'))!;
      for (const id of acknowledgedGroups) expect(data.groups[id], `group ${id}`).toBeDefined();
      for (const id of acknowledgedConnectors) expect(data.connectors[id], `connector ${id}`).toBeDefined();
      for (const id of revoked) expect(data.connectors[id]?.status, `revoked ${id}`).toBe('revoked');
    }
    expect(acknowledgedGroups.size).toBeGreaterThan(100);
    expect(acknowledgedConnectors.size).toBeGreaterThan(10);
    expect(revoked.size).toBeGreaterThan(3);
    // And the server starts on it.
    const last = await spawnServer(dataDir, [], port);
    const admin = createAdminClient({ url: last.url, adminKey: last.adminKey });
    expect((await admin.groups.list.query({})).length).toBeGreaterThanOrEqual(acknowledgedGroups.size);
    last.kill('SIGTERM');
    expect((await last.exited).code).toBe(0);
  });
});
