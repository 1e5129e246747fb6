import { describe, expect, it } from 'vitest';
import { connectSim, enrollSim, openSession } from './helpers/agent-sim.js';
import { startTestServer } from './helpers/server.js';

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : Number.NaN;
}

describe('/metrics', () => {
  it('counts enrollments by outcome, connectors by state, sessions, refusals by reason and revoke-to-close latency', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Metered' });
    const key = (await srv.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const a = (await enrollSim(srv.url, key, 'a')).enrolled!;
    const b = (await enrollSim(srv.url, key, 'b')).enrolled!;
    await enrollSim(srv.url, 'cpk_nope');
    const live = connectSim(srv.url, a);
    await live.waitFor('ready');
    const refused = openSession(srv.url, { identity: 'garbage', proof: 'garbage' });
    await refused.waitForClose();
    // A session replaced by another of its connector ends too, but is no revoke: not in the histogram.
    const first = connectSim(srv.url, b);
    await first.waitFor('ready');
    const second = connectSim(srv.url, b);
    await second.waitFor('ready');
    await first.waitForClose();
    await second.close();
    await srv.admin.connectors.revoke.mutate({ connectorId: a.connectorId });
    await live.waitForClose();
    await refused.close();
    await live.close();

    const text = await (await fetch(`${srv.url}/metrics`)).text();
    expect(metric(text, 'connector_enrollments_total{outcome="success"}')).toBe(2);
    expect(metric(text, 'connector_enrollments_total{outcome="KEY_INVALID"}')).toBe(1);
    expect(metric(text, 'connector_connectors{state="revoked"}')).toBe(1);
    expect(metric(text, 'connector_connectors{state="never"}')).toBe(0);
    expect(metric(text, 'connector_connectors{state="enabled"}')).toBe(1);
    expect(metric(text, 'connector_session_connects_total')).toBe(3);
    expect(metric(text, 'connector_session_refusals_total{reason="IDENTITY_INVALID"}')).toBe(1);
    expect(metric(text, 'connector_revoke_close_seconds_count')).toBe(1);
    expect(metric(text, 'connector_sessions_live')).toBe(0);
    expect(b.connectorId).toBeTruthy();
  });
});
