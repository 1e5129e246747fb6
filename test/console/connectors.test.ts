import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollSim } from '../helpers/agent-sim.js';
import { ACK_BOUND_UNDER_LOAD_MS, spawnAgent, waitConnected, waitForAgentStatus } from '../helpers/agents.js';
import { seriousA11yViolations } from '../helpers/axe.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { realTimeClock, startTestServer } from '../helpers/server.js';

/** A group's connectors page in a real Chromium: live rows, row actions that reach the agent, paging. */
describe('console: connectors', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('a real agent shows live; Disable reaches it live; Revoke makes it exit 4 and changes the group key', async () => {
    // The audit story ends with the agent's confirmation of the revoke: see ACK_BOUND_UNDER_LOAD_MS.
    await using server = await startTestServer({
      clock: realTimeClock(),
      config: { terminationAckTimeoutMs: ACK_BOUND_UNDER_LOAD_MS },
    });
    const work = await mkdtemp(join(tmpdir(), 'ce-console-'));
    const group = await server.admin.groups.create.mutate({ name: 'Lab' });
    const { key } = await server.admin.provisioningKeys.get.query({ groupId: group.id });
    const keyFile = join(work, 'lab.key');
    await writeFile(keyFile, `${key}\n`, { mode: 0o600 });
    const stateDir = join(work, 'agent');
    const agent = spawnAgent(['--server', server.url, '--key-file', keyFile, '--name', 'lab-1'], stateDir);
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    try {
      await waitConnected(server.admin, 'lab-1');
      await signIn(page, server.url, server.adminKey);
      await page.getByRole('link', { name: 'Lab' }).click();
      await page.getByRole('heading', { name: 'Lab — connectors' }).waitFor();
      await page.getByRole('status').getByText('Live', { exact: true }).waitFor();
      const row = page.getByRole('row', { name: /lab-1/ });
      await row.getByText('Connected', { exact: true }).waitFor();
      expect(await seriousA11yViolations(page)).toEqual([]);
      await screenshot(page, 'connectors');

      await row.getByRole('button', { name: 'Actions for lab-1' }).click();
      await page.getByRole('menuitem', { name: 'Disable' }).click();
      await page.getByRole('button', { name: 'Disable connector' }).click();
      await waitForAgentStatus(stateDir, 'disabled at the agent', (s) => s.status === 'disabled');
      await row.getByText('disabled', { exact: true }).waitFor();

      await row.getByRole('button', { name: 'Actions for lab-1' }).click();
      await page.getByRole('menuitem', { name: 'Revoke' }).click();
      const confirm = page.getByRole('dialog', { name: 'Revoke lab-1?' });
      await confirm.getByText("The group's provisioning key is regenerated too").waitFor();
      await confirm.getByLabel(/^Reason/).fill('  lab host decommissioned ');
      await confirm.getByRole('button', { name: 'Revoke connector' }).click();
      expect((await agent.exited).code).toBe(4);
      await row.getByText('revoked', { exact: true }).waitFor();
      // The reason is kept (trimmed) and shown with the row, with whether the host heard it.
      const connectorId = (await server.admin.connectors.list.query({})).items.find(
        (c) => c.name === 'lab-1',
      )!.id;
      expect((await server.admin.connectors.get.query({ connectorId })).revokeReason).toBe(
        'lab host decommissioned',
      );
      await row.getByText(/: lab host decommissioned \(the host confirmed\)$/).waitFor();
      await screenshot(page, 'connectors-revoked');

      await page.getByRole('link', { name: '← Connector Groups' }).click();
      await page.getByRole('button', { name: 'Actions for Lab' }).click();
      await page.getByRole('menuitem', { name: 'View Provisioning Key' }).click();
      const dialog = page.getByRole('dialog', { name: 'Connector Provisioning Key - Lab' });
      await dialog.getByRole('button', { name: 'Reveal' }).click();
      const shown = await dialog.getByTestId('provisioning-key').textContent();
      expect(shown).toMatch(/^cpk_/);
      expect(shown).not.toBe(key);
      await dialog.getByRole('button', { name: 'Close' }).click();

      // The audit tells the story, newest first, each step once.
      await page.getByRole('link', { name: 'Audit' }).click();
      await page.getByRole('heading', { name: 'Audit', level: 1 }).waitFor();
      const cells = page.locator('table.audit .audit-type');
      const story = [
        'group.created',
        'enrollment.succeeded',
        'session.connected',
        'connector.disabled',
        'connector.revoked',
      ];
      // The revoke's new group key is in its event (keyId); the agent's acknowledgement follows it.
      const after = ['connector.revocation_confirmed'];
      await expect
        .poll(async () => (await cells.allTextContents()).map((text) => text.split(' ')[0]))
        .toEqual(expect.arrayContaining([...story, ...after]));
      const types = (await cells.allTextContents()).map((text) => text.split(' ')[0]);
      const at = (type: string) => types.lastIndexOf(type);
      for (let i = 1; i < story.length; i++)
        expect(at(story[i] as string), story[i]).toBeLessThan(at(story[i - 1] as string));
      for (const type of after) expect(at(type), type).toBeLessThan(at('connector.revoked'));
    } finally {
      await context.close();
      await agent.stop();
      await rm(work, { recursive: true, force: true });
    }
  });

  it('host names and names a host reports render as text', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Edge' });
    const { key } = await server.admin.provisioningKeys.get.query({ groupId: group.id });
    const hostile = '<img src=x onerror="window.pwned=1"><script>pwned=2</script>';
    expect((await enrollSim(server.url, key!, hostile)).ok).toBe(true);
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.goto(`${server.url}/#/groups/${group.id}`);
    const cell = page.getByRole('rowheader', { name: hostile });
    expect(await cell.textContent()).toBe(hostile);
    expect(await page.locator('main img, main script').count()).toBe(0);
    expect(await page.evaluate<unknown>('window.pwned')).toBeUndefined();
    await context.close();
  });

  it('a group the server does not know (a wrong link, or deleted): says so, with no filters or pager to use; a link to no page is made #/groups', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Soon gone' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.goto(`${server.url}/#/groups/${group.id}`);
    await page.getByRole('form', { name: 'Filters' }).waitFor();
    await server.admin.groups.delete.mutate({ groupId: group.id });
    // The live feed tells the page; it reads the group again and finds it gone.
    await page.getByTestId('group-missing').waitFor();
    expect(await page.getByRole('form', { name: 'Filters' }).count()).toBe(0);
    expect(await page.getByRole('navigation', { name: 'Pages' }).count()).toBe(0);
    expect(await page.getByRole('alert').textContent()).toContain('GROUP_NOT_FOUND');
    await page.goto(`${server.url}/#/groups/grp_nosuchgroup`);
    await page.getByTestId('group-missing').waitFor();
    await page.getByTestId('group-missing').getByRole('link', { name: 'connector groups' }).click();
    await page.getByRole('heading', { name: 'Connector Groups' }).waitFor();
    // A link that names no page (no group id, or no page at all) shows the groups and says so in the
    // URL, in its place: Back does not return to it.
    for (const wrong of ['#/groups/not-an-id', '#/nope']) {
      await page.goto(`${server.url}/#/audit`);
      await page.getByRole('heading', { name: 'Audit' }).waitFor();
      await page.goto(`${server.url}/${wrong}`);
      await page.getByRole('heading', { name: 'Connector Groups' }).waitFor();
      await expect.poll(() => new URL(page.url()).hash).toBe('#/groups');
      await page.goBack();
      await page.getByRole('heading', { name: 'Audit' }).waitFor();
      expect(new URL(page.url()).hash).toBe('#/audit');
    }
    await context.close();
  });

  it('pages through the server 50 rows at a time and filters on the server', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Fleet' });
    const { key } = await server.admin.provisioningKeys.get.query({ groupId: group.id });
    for (let i = 0; i < 60; i++) {
      expect((await enrollSim(server.url, key!, `host-${i}`)).ok).toBe(true);
      server.clock.advance(1000);
    }
    const disabled = (await server.admin.connectors.list.query({ groupId: group.id, limit: 3 })).items;
    for (const c of disabled) await server.admin.connectors.disable.mutate({ connectorId: c.id });

    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    const requests: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/trpc/connectors.list')) requests.push(decodeURIComponent(r.url()));
    });
    await page.goto(`${server.url}/#/groups/${group.id}`);
    const rows = page.locator('table.connectors tbody tr');
    const range = page.getByTestId('page-range');
    await expect.poll(() => rows.count()).toBe(50);
    expect(requests.every((url) => url.includes('"limit":50'))).toBe(true);
    expect(await range.textContent()).toBe('Page 1: 1–50 of 60');
    // Oldest enrollment first (the order the server pages in), and the page says so.
    expect(await rows.first().getByRole('rowheader').textContent()).toBe('host-0');
    await page.getByText('Oldest enrollment first').waitFor();
    // Next, from the pager at the bottom: the window goes back up to where the rows start.
    await page.evaluate('window.scrollTo(0, document.body.scrollHeight)');
    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => rows.count()).toBe(10);
    expect(await range.textContent()).toBe('Page 2: 51–60 of 60');
    expect(await page.evaluate<number>('window.scrollY')).toBe(0);
    expect(await page.getByRole('button', { name: 'Next page' }).isDisabled()).toBe(true);
    // The page is in the URL: a reload, Back from another page, or the link shared keeps it.
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}?page=2`);
    await page.reload();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–60 of 60');
    await page.getByRole('link', { name: '← Connector Groups' }).click();
    await page.getByRole('heading', { name: 'Connector Groups' }).waitFor();
    await page.goBack();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–60 of 60');
    expect(await rows.first().getByRole('rowheader').textContent()).toBe('host-50');
    await page.getByRole('button', { name: 'Previous page' }).click();
    await expect.poll(() => rows.count()).toBe(50);
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}`);
    // A page past the last is the last page.
    await page.goto(`${server.url}/#/groups/${group.id}?page=9`);
    await page.reload();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–60 of 60');
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}?page=2`);
    await page.getByRole('link', { name: '← Connector Groups' }).click();
    await page.getByRole('link', { name: 'Fleet' }).click();
    await expect.poll(() => rows.count()).toBe(50);

    await page.getByLabel('Status').selectOption('disabled');
    await expect.poll(() => rows.count()).toBe(3);
    expect(requests.at(-1)).toContain('"status":"disabled"');
    // One page: its rows and how many, no buttons to page with.
    expect(await range.textContent()).toBe('1–3 of 3');
    expect(await page.getByRole('button', { name: /page$/ }).count()).toBe(0);
    await page.getByLabel('Connection').selectOption('connected');
    await page.getByText('No connectors match.').waitFor();
    expect(await page.getByRole('navigation', { name: 'Pages' }).count()).toBe(0);
    // The filters are in the URL: a reload (or the link, shared) shows the same rows.
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}?status=disabled&connection=connected`);
    await page.reload();
    await page.getByText('No connectors match.').waitFor();
    expect(await page.getByLabel('Status').inputValue()).toBe('disabled');
    expect(await page.getByLabel('Connection').inputValue()).toBe('connected');
    await page.getByLabel('Connection').selectOption('');
    await expect.poll(() => rows.count()).toBe(3);
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}?status=disabled`);
    // A value the page does not offer is no filter (and leaves the URL).
    await page.goto(`${server.url}/#/groups/${group.id}?status=bogus`);
    await page.reload();
    await expect.poll(() => rows.count()).toBe(50);
    expect(await page.getByLabel('Status').inputValue()).toBe('');
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}`);

    // Search (name, hostname or id) on the server, once typing pauses, kept in the URL as q.
    const sent = requests.length;
    await page.getByLabel('Search').pressSequentially('host-5', { delay: 20 });
    await expect.poll(() => rows.count()).toBe(11); // host-5 and host-50 … host-59
    const searches = requests.slice(sent).filter((url) => url.includes('"search"'));
    // Not one query per key (a loaded machine may pause mid-word: fewer, not exactly one).
    expect(searches.length).toBeLessThan('host-5'.length);
    expect(searches.at(-1)).toContain('"search":"host-5"');
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}?q=host-5`);
    await page.getByLabel('Status').selectOption('disabled');
    await page.reload();
    expect(await page.getByLabel('Search').inputValue()).toBe('host-5');
    const byId = disabled[0]!.id;
    await page.getByLabel('Status').selectOption('');
    await page.getByLabel('Search').fill(byId);
    await page.getByLabel('Search').press('Enter');
    await expect.poll(() => rows.count()).toBe(1);
    expect(await rows.first().getAttribute('data-connector-id')).toBe(byId);
    await page.getByLabel('Search').fill('');
    await expect.poll(() => rows.count()).toBe(50);
    expect(new URL(page.url()).hash).toBe(`#/groups/${group.id}`);
    await context.close();
  });
});
