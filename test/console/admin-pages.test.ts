import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollSim } from '../helpers/agent-sim.js';
import { seriousA11yViolations } from '../helpers/axe.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { rawCall, startTestServer } from '../helpers/server.js';

/** Admin › API Keys and Audit in a real Chromium. */
describe('console: admin pages', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('API Keys: create (shown once, copied), delete; provisioning keys listed by name with the warning; Audit shows each step', async () => {
    await using server = await startTestServer();
    await server.admin.groups.create.mutate({ name: 'Lab' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Admin › API Keys' }).click();
    await page.getByRole('heading', { name: 'API Keys', level: 1 }).waitFor();

    const provisioning = page.getByRole('row', { name: /^Connector Provisioning Key - Lab/ });
    await provisioning.getByText('Do not delete: it belongs to its connector group.').waitFor();
    expect(await provisioning.getByRole('button').count()).toBe(0);

    await page.getByLabel('New API key').fill('ci');
    await page.getByLabel('Scope').selectOption('read');
    // A key may expire, as `api-keys create --expires-in` makes it; it never does unless chosen.
    const expires = page.getByLabel('Expires');
    expect(await expires.locator('option:checked').textContent()).toBe('Never');
    await expires.selectOption({ label: 'in 30 days' });
    await page.getByRole('button', { name: 'Create key' }).click();
    const shown = page.getByRole('dialog', { name: 'API key ci created' });
    const key = (await shown.getByTestId('new-api-key').textContent())!;
    expect(key).toMatch(/^cak_/);
    expect(await shown.getByTestId('new-api-key-expiry').textContent()).toMatch(
      /^It expires .* \(in 30 days\)\.$/,
    );
    const made = (await server.admin.apiKeys.list.query({})).find((k) => k.name === 'ci')!;
    expect(Date.parse(made.expiresAt!) - Date.parse(made.createdAt)).toBe(30 * 86_400_000);
    await shown.getByRole('button', { name: 'Copy' }).click();
    await expect.poll(() => page.evaluate<string>('navigator.clipboard.readText()')).toBe(key);
    expect((await rawCall(server.url, 'groups.list', {}, { key })).ok).toBe(true);
    await shown.getByRole('button', { name: 'Done' }).click();
    const row = page.getByRole('row', { name: /^ci\b/ });
    await row.getByText('API key, read only').waitFor();
    await row.getByText(/\(in 30 days\)$/).waitFor();
    expect(
      await page
        .getByRole('row', { name: /^bootstrap\b/ })
        .getByText('Never', { exact: true })
        .count(),
    ).toBe(1);
    expect(await seriousA11yViolations(page)).toEqual([]);
    await screenshot(page, 'api-keys');

    // The key this console signed in with is marked, and its Delete says why it is off.
    const own = page.getByRole('row', { name: /^bootstrap\b/ });
    await own.getByText('this console', { exact: true }).waitFor();
    expect(await row.getByText('this console', { exact: true }).count()).toBe(0);
    const ownDelete = own.getByRole('button', { name: 'Delete' });
    expect(await ownDelete.isDisabled()).toBe(true);
    expect(await ownDelete.getAttribute('title')).toContain('This console is signed in with this key');

    // A group made elsewhere brings its provisioning key here live; an admin key made elsewhere
    // comes with Refresh (the live feed names groups, not admin keys).
    // The page says so: "Live" alone read as the whole page being live.
    await page
      .getByRole('status')
      .getByText('Live (provisioning keys; admin keys made elsewhere show on Refresh)', { exact: true })
      .waitFor();
    await server.admin.groups.create.mutate({ name: 'Elsewhere' });
    await page.getByRole('row', { name: /^Connector Provisioning Key - Elsewhere/ }).waitFor();
    await server.admin.apiKeys.create.mutate({ name: 'made-by-script', scope: 'read' });
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.getByRole('row', { name: /^made-by-script\b/ }).waitFor();

    await row.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('button', { name: 'Delete key' }).click();
    await expect.poll(() => row.count()).toBe(0);
    expect((await rawCall(server.url, 'groups.list', {}, { key })).status).toBe(401);

    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit', level: 1 }).waitFor();
    const types = page.locator('table.audit .audit-type');
    await expect
      .poll(async () => (await types.allTextContents()).filter((t) => !t.startsWith('admin.')))
      .toEqual(expect.arrayContaining(['api_key.deleted', 'api_key.created', 'group.created']));
    // The deleted key is gone from the server, but its creation on this page kept its name.
    await expect
      .poll(() =>
        page
          .getByRole('row', { name: /api_key\.deleted/ })
          .getByRole('cell')
          .nth(2)
          .textContent(),
      )
      .toBe('key ci');
    expect(await seriousA11yViolations(page)).toEqual([]);
    await screenshot(page, 'audit');
    await page.getByLabel('Type').fill('api_key');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect
      .poll(() => types.allTextContents())
      .toEqual(['api_key.deleted', 'api_key.created', 'api_key.created', 'api_key.bootstrapped']);
    // The box emptied, then "Security events only": the type filter goes with the box, not stays.
    await page.getByLabel('Type').fill('');
    await page.getByLabel('Security events only').check();
    // (The deleted key's refused call above is one.)
    await expect.poll(() => types.allTextContents()).toEqual(['admin.refused (refused: ADMIN_KEY_INVALID)']);
    await page.getByLabel('Type').fill('group');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect
      .poll(() => page.getByTestId('audit-empty').textContent())
      .toBe('No events of type group flagged security. ');
    // The filters are in the URL: a reload (or the link, shared) shows the same events.
    expect(new URL(page.url()).hash).toBe('#/audit?type=group&security=1');
    await page.goto(`${server.url}/#/audit?type=api_key.created`);
    await page.reload();
    await expect.poll(() => types.allTextContents()).toEqual(['api_key.created', 'api_key.created']);
    expect(await page.getByLabel('Type').inputValue()).toBe('api_key.created');
    expect(await page.getByLabel('Security events only').isChecked()).toBe(false);
    // A type the page does not take is no filter (and leaves the URL).
    await page.goto(`${server.url}/#/audit?type=%3Cscript%3E`);
    await page.reload();
    await expect.poll(() => new URL(page.url()).hash).toBe('#/audit');
    expect(await page.getByLabel('Type').inputValue()).toBe('');
    // The box holding what the page would not take, the checkbox keeps the filter in force and says so.
    await page.getByLabel('Type').fill('bad-type');
    await page.getByLabel('Security events only').check();
    await expect.poll(() => new URL(page.url()).hash).toBe('#/audit?security=1');
    expect(await page.getByLabel('Type').inputValue()).toBe('');
    await context.close();
  });

  it("times are the reader's, with the zone named: the CLI and the logs say UTC", async () => {
    await using server = await startTestServer();
    await server.admin.groups.create.mutate({ name: 'Zoned' });
    const context = await consoleContext(browser, server.url, { timezoneId: 'Asia/Tokyo' });
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit', level: 1 }).waitFor();
    const created = page.getByRole('row', { name: /group\.created/ });
    await created.waitFor();
    // The test server's clock is a manual one: its events carry its time, shown in Tokyo's.
    const at = (await server.admin.audit.list.query({ type: 'group.created' }))[0]!.at;
    const tokyo = new Date(at).toLocaleString('en-US', {
      timeZone: 'Asia/Tokyo',
      year: 'numeric',
      month: 'short',
      day: 'numeric',
      hour: 'numeric',
      minute: '2-digit',
      second: '2-digit',
      timeZoneName: 'short',
    });
    expect(tokyo).toMatch(/GMT\+9$/);
    expect(await created.getByRole('cell').first().textContent()).toBe(tokyo);
    await context.close();
  });

  it('Audit names who did what to what: admin key, group, connector and key names (a deleted connector by the name its event kept), ids in the titles', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Lab' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const kept = (await enrollSim(server.url, key, 'edge-1')).enrolled!;
    const gone = (await enrollSim(server.url, key, 'edge-2')).enrolled!;
    await server.admin.connectors.disable.mutate({ connectorId: kept.connectorId });
    await server.admin.connectors.delete.mutate({ connectorId: gone.connectorId });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit', level: 1 }).waitFor();
    const row = (type: string) =>
      page.getByRole('row').filter({ has: page.getByRole('rowheader', { name: type, exact: true }) });
    const disabled = row('connector.disabled');
    await expect.poll(() => disabled.getByRole('cell').nth(1).textContent()).toBe('admin bootstrap');
    expect(await disabled.getByRole('cell').nth(2).textContent()).toBe('group Lab · connector edge-1');
    expect(await disabled.getByText('connector edge-1').getAttribute('title')).toBe(kept.connectorId);
    expect(await row('connector.deleted').getByRole('cell').nth(2).textContent()).toBe(
      'group Lab · connector edge-2',
    );
    // An enrollment: the agent and the key it used, by name.
    const enrolled = row('enrollment.succeeded').first();
    expect(await enrolled.getByRole('cell').nth(1).textContent()).toMatch(/^agent edge-[12]$/);
    expect(await enrolled.getByRole('cell').nth(2).textContent()).toMatch(
      /^group Lab · connector edge-[12] · key Connector Provisioning Key - Lab$/,
    );
    await context.close();
  });

  it('Audit pages: the page in the URL (reload, Back, a link), which events of how many, Older off on a full last page, the window back at the top', async () => {
    await using server = await startTestServer();
    // Two full pages of group.created exactly: the last page holds 50, and there is nothing older.
    for (let i = 0; i < 100; i++) await server.admin.groups.create.mutate({ name: `g${i}` });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.goto(`${server.url}/#/audit?type=group.created`);
    const rows = page.locator('table.audit tbody tr');
    const range = page.getByTestId('page-range');
    const older = page.getByRole('button', { name: 'Older' });
    await expect.poll(() => rows.count()).toBe(50);
    // No count from the server: one page in, it knows only that there is at least one more.
    expect(await range.textContent()).toBe('Page 1: 1–50 of at least 51');
    await page.evaluate('window.scrollTo(0, document.body.scrollHeight)');
    expect(await page.evaluate<number>('window.scrollY')).toBeGreaterThan(0);
    await older.click();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–100 of 100');
    expect(await rows.count()).toBe(50);
    expect(await page.evaluate<number>('window.scrollY')).toBe(0);
    // Nothing older: no click onto an empty page.
    expect(await older.isDisabled()).toBe(true);
    expect(new URL(page.url()).hash).toBe('#/audit?type=group.created&page=2');
    const firstOnPage2 = await rows.first().locator('td.details').textContent();
    expect(firstOnPage2).toMatch(/^name="g49", /);
    await page.reload();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–100 of 100');
    await page.getByRole('link', { name: 'API Keys' }).click();
    await page.getByRole('heading', { name: 'API Keys', level: 1 }).waitFor();
    await page.goBack();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–100 of 100');
    expect(await rows.first().locator('td.details').textContent()).toBe(firstOnPage2);
    await page.getByRole('button', { name: 'Newer' }).click();
    await expect.poll(() => range.textContent()).toBe('Page 1: 1–50 of at least 51');
    expect(new URL(page.url()).hash).toBe('#/audit?type=group.created');
    // A page past the last is the last page.
    await page.goto(`${server.url}/#/audit?type=group.created&page=9`);
    await page.reload();
    await expect.poll(() => range.textContent()).toBe('Page 2: 51–100 of 100');
    expect(new URL(page.url()).hash).toBe('#/audit?type=group.created&page=2');
    // Another filter starts at the newest page; one page: its events and how many, no buttons to page with.
    await page.getByLabel('Type').fill('group.createdd');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.getByTestId('audit-empty').waitFor();
    expect(new URL(page.url()).hash).toBe('#/audit?type=group.createdd');
    expect(await page.getByRole('navigation', { name: 'Pages' }).count()).toBe(0);
    await server.admin.groups.delete.mutate({ groupId: (await server.admin.groups.list.query({}))[0]!.id });
    await page.getByLabel('Type').fill('group.deleted');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect.poll(() => range.textContent()).toBe('1–1 of 1');
    expect(await page.getByRole('button', { name: /^(Newer|Older)$/ }).count()).toBe(0);
    await context.close();
  });

  it('Audit: the security filter runs on the server (an old refusal is found behind a page of newer events)', async () => {
    await using server = await startTestServer();
    // A security event first, then more ordinary events than one page holds: filtering only the
    // loaded page would show nothing.
    for (let i = 0; i < 3; i++)
      expect((await rawCall(server.url, 'groups.list', {}, { key: 'cak_not-a-key' })).status).toBe(401);
    // Listing writes the summary of the repeats now, before the newer events.
    await server.admin.audit.list.query({ limit: 1 });
    for (let i = 0; i < 55; i++) await server.admin.groups.create.mutate({ name: `g${i}` });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.getByRole('heading', { name: 'Audit', level: 1 }).waitFor();
    const cells = page.locator('table.audit .audit-type');
    // A cell reads "admin.refused (refused: ADMIN_KEY_INVALID)": the type is its first word.
    const types = async () => (await cells.allTextContents()).map((text) => text.split(' ')[0]);
    await expect.poll(() => cells.count()).toBe(50);
    expect(await types()).not.toContain('admin.refused');
    await page.getByLabel('Security events only').check();
    await expect.poll(types).toContain('admin.refused');
    expect(await types()).not.toContain('group.created');
    // Three refusals: the first, and a summary of the other two, which says how many it stands for.
    expect(await cells.allTextContents()).toEqual([
      'admin.refused (refused: ADMIN_KEY_INVALID) ×2',
      'admin.refused (refused: ADMIN_KEY_INVALID)',
    ]);
    await context.close();
  });
});
