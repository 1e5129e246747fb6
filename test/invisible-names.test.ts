import { describe, expect, it, vi } from 'vitest';
import { generateAgentKeyPair } from '../agent/proof.js';
import { printFields, printTable } from '../server/cli/format.js';
import { enrollSim, hostFacts } from './helpers/agent-sim.js';
import { rawCall, startTestServer } from './helpers/server.js';

describe('invisible characters in names (issue 10, item 8)', () => {
  it('groups.create and groups.update refuse "a\\u2060b" with VALIDATION_FAILED naming U+2060; nothing is stored', async () => {
    await using srv = await startTestServer();
    const created = await rawCall(srv.url, 'groups.create', { name: 'a\u2060b' }, { key: srv.adminKey });
    expect(created).toMatchObject({ ok: false, status: 400, reason: 'VALIDATION_FAILED' });
    expect(created.error.message).toContain('name: contains an invisible character (U+2060)');
    const group = await srv.admin.groups.create.mutate({ name: 'Visible' });
    const updated = await rawCall(
      srv.url,
      'groups.update',
      { groupId: group.id, description: 'soft\u00adhyphen' },
      { key: srv.adminKey },
    );
    expect(updated).toMatchObject({ ok: false, reason: 'VALIDATION_FAILED' });
    expect(updated.error.message).toContain('description: contains an invisible character (U+00AD)');
    expect((await srv.admin.groups.list.query({})).map((g) => g.name)).toEqual(['Visible']);
  });

  it('an agent enrolling with --name "a\\u3164b" is refused; one whose hostname holds U+200B is enrolled, the character escaped', async () => {
    await using srv = await startTestServer();
    const group = await srv.admin.groups.create.mutate({ name: 'Hosts' });
    const { key } = await srv.admin.provisioningKeys.get.query({ groupId: group.id });
    const named = await enrollSim(srv.url, key!, 'a\u3164b');
    expect(named).toMatchObject({ ok: false, reason: 'VALIDATION_FAILED' });
    expect(named.error.message).toContain('contains an invisible character (U+3164)');

    const { publicJwk } = await generateAgentKeyPair();
    const unnamed = await rawCall(srv.url, 'agent.enroll', {
      provisioningKey: key,
      publicKey: publicJwk,
      host: hostFacts('web\u200b-1'),
      agentVersion: 'test',
    });
    expect(unnamed).toMatchObject({ ok: true, status: 200 });
    const connector = await srv.admin.connectors.get.query({ connectorId: unnamed.data.connectorId });
    // The default name is the hostname: it cannot bring the character in either.
    expect(connector.name).toBe('web\\u{200B}-1');
    expect(connector.host.hostname).toBe('web\\u{200B}-1');
  });

  it('CLI tables and fields show invisible and control characters already stored as \\u{…}', () => {
    const lines: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((line: string) => void lines.push(line));
    try {
      printTable(['NAME'], [['ops\u2060'], ['\u{e0041}x'], ['plain é']]);
    } finally {
      log.mockRestore();
    }
    const table = lines.join('\n');
    expect(table).toContain('ops\\u{2060}');
    expect(table).toContain('\\u{E0041}x');
    expect(table).toContain('plain é');
    expect(table).not.toMatch(/[\u2060\u{e0041}]/u);
    const fields: string[] = [];
    printFields([['name', 'bad\u001b[2J\u00ad']], (line) => fields.push(line));
    expect(fields).toEqual(['name: bad\\u{1B}[2J\\u{AD}']);
  });
});
