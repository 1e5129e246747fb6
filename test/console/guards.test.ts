import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollSim } from '../helpers/agent-sim.js';
import { seriousA11yViolations } from '../helpers/axe.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { openConsole } from '../helpers/console.js';
import { realTimeClock, startTestServer } from '../helpers/server.js';

const DAY_MS = 86_400_000;

/** What the console refuses or guards: expired keys, read-only keys, revoked keys, hostile text. */
describe('console: guards', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it("a key's 17th console says why it is not live and backs off instead of reopening its socket ~40 times a second", async () => {
    await using server = await startTestServer();
    // Sixteen consoles of this key already hold its sockets.
    const others = Array.from({ length: 16 }, () => openConsole(server.url, server.adminKey));
    await Promise.all(others.map((feed) => feed.started));
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    let sockets = 0;
    page.on('websocket', () => {
      sockets++;
    });
    await signIn(page, server.url, server.adminKey);
    await page
      .getByRole('status')
      .getByText(/too many consoles open/)
      .waitFor();
    const from = sockets;
    await new Promise((resolve) => setTimeout(resolve, 5000));
    // 1, 2, 4 s (half of each random) apart: at most a handful in 5 s.
    expect(sockets - from).toBeLessThanOrEqual(6);
    // A tab closed elsewhere frees a socket: this one goes live on its next try.
    await others.pop()!.close();
    await page.getByRole('status').getByText('Live', { exact: true }).waitFor({ timeout: 40_000 });
    await Promise.all(others.map((feed) => feed.close()));
    await context.close();
  }, 90_000);

  it("Regenerate in the console keeps the key's policy (a single-use, 2-day key stays so) unless changed there", async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Single', maxUses: 1, ttl: '2d' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    const row = page.getByRole('row', { name: /^Single\b/ });
    await row.getByRole('button', { name: 'Actions for Single' }).click();
    await page.getByRole('menuitem', { name: 'View Provisioning Key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Connector Provisioning Key - Single' });
    await dialog.getByText('Active', { exact: true }).waitFor();
    await dialog.getByRole('button', { name: 'Regenerate' }).click();
    const confirm = page.getByRole('dialog', { name: 'Regenerate the key of Single?' });
    const validFor = confirm.getByLabel('Valid for');
    const allowed = confirm.getByLabel('Enrollments allowed');
    expect(await validFor.locator('option:checked').textContent()).toBe('2 days, as now');
    expect(await allowed.inputValue()).toBe('1');
    await confirm.getByRole('button', { name: 'Regenerate key' }).click();
    await page
      .getByRole('dialog', { name: 'Connector Provisioning Key - Single' })
      .getByText('Active', { exact: true })
      .waitFor();
    const now = await server.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(now.maxUses).toBe(1);
    expect(Date.parse(now.expiresAt) - Date.parse(now.createdAt)).toBe(2 * DAY_MS);

    // Changed in the confirmation: a use limit that is no whole number is refused before any call.
    await dialog.getByRole('button', { name: 'Regenerate' }).click();
    await validFor.selectOption('7d');
    expect(await seriousA11yViolations(page)).toEqual([]);
    await screenshot(page, 'regenerate-policy');
    await allowed.fill('0');
    await confirm.getByRole('button', { name: 'Regenerate key' }).click();
    await confirm.getByRole('alert').getByText('Enrollments allowed: a whole number from 1').waitFor();
    expect((await server.admin.provisioningKeys.get.query({ groupId: group.id })).keyId).toBe(now.keyId);
    await allowed.fill('');
    await confirm.getByRole('button', { name: 'Regenerate key' }).click();
    await dialog.getByText('Enrolled with it').waitFor();
    await expect
      .poll(async () => (await server.admin.provisioningKeys.get.query({ groupId: group.id })).keyId)
      .not.toBe(now.keyId);
    const changed = await server.admin.provisioningKeys.get.query({ groupId: group.id });
    expect(changed.maxUses).toBeNull();
    expect(Date.parse(changed.expiresAt) - Date.parse(changed.createdAt)).toBe(7 * DAY_MS);
    await page.keyboard.press('Escape');
    // A key of seconds or minutes says so: it read "valid 0 hours".
    for (const [ttl, words] of [
      ['30s', '30 seconds, as now'],
      ['45m', '45 minutes, as now'],
    ]) {
      const brief = await server.admin.groups.create.mutate({ name: `Brief ${ttl}`, ttl });
      await page.getByRole('row', { name: new RegExp(`^Brief ${ttl}\\b`) }).waitFor();
      await page.getByRole('button', { name: `Actions for Brief ${ttl}` }).click();
      await page.getByRole('menuitem', { name: 'View Provisioning Key' }).click();
      const briefDialog = page.getByRole('dialog', { name: `Connector Provisioning Key - ${brief.name}` });
      await briefDialog.getByRole('button', { name: 'Regenerate' }).click();
      const briefConfirm = page.getByRole('dialog', { name: `Regenerate the key of ${brief.name}?` });
      expect(await briefConfirm.getByLabel('Valid for').locator('option:checked').textContent()).toBe(words);
      expect(await briefConfirm.getByLabel('Enrollments allowed').inputValue()).toBe('');
      await page.keyboard.press('Escape');
      await page.keyboard.press('Escape');
    }
    await context.close();
  });

  it("Create group in the console takes a description and the first key's policy (a single-use, 1-day key), refusing a bad limit before any call", async () => {
    await using server = await startTestServer();
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    const form = page.getByRole('form', { name: 'Create a group' });
    await form.getByLabel('New group').fill('Kiosks');
    await form.getByText('Options', { exact: true }).click();
    await form.getByLabel('Description').fill('Lobby kiosks, one each');
    await form.getByLabel('Key valid for').selectOption('1d');
    await form.getByLabel('Enrollments allowed').fill('1.5');
    await form.getByRole('button', { name: 'Create group' }).click();
    await form.getByRole('alert').getByText('Enrollments allowed: a whole number from 1').waitFor();
    // "1e3" is a number to Number(), not a count someone typed: refused too (it made 1,000 uses).
    await form.getByLabel('Enrollments allowed').fill('1e3');
    await form.getByRole('button', { name: 'Create group' }).click();
    await form.getByRole('alert').getByText('Enrollments allowed: a whole number from 1').waitFor();
    expect(await server.admin.groups.list.query({})).toEqual([]);
    await form.getByLabel('Enrollments allowed').fill('1');
    expect(await seriousA11yViolations(page)).toEqual([]);
    await screenshot(page, 'create-group-options');
    await form.getByRole('button', { name: 'Create group' }).click();
    await page.getByRole('row', { name: /^Kiosks\b/ }).waitFor();
    const [group] = await server.admin.groups.list.query({});
    expect(group).toMatchObject({ name: 'Kiosks', description: 'Lobby kiosks, one each' });
    const key = await server.admin.provisioningKeys.get.query({ groupId: group!.id });
    expect(key.maxUses).toBe(1);
    expect(Date.parse(key.expiresAt) - Date.parse(key.createdAt)).toBe(DAY_MS);
    // The description is shown under the name, and Rename changes it (it was stored, never shown).
    const kiosks = page.getByRole('row', { name: /^Kiosks\b/ });
    await kiosks.getByText('Lobby kiosks, one each').waitFor();
    await kiosks.getByRole('button', { name: 'Actions for Kiosks' }).click();
    await page.getByRole('menuitem', { name: 'Rename' }).click();
    const rename = page.getByRole('dialog', { name: 'Rename Kiosks' });
    await rename.getByLabel('Description').fill('Lobby kiosks, two each');
    await rename.getByRole('button', { name: 'Rename' }).click();
    await kiosks.getByText('Lobby kiosks, two each').waitFor();
    expect((await server.admin.groups.list.query({}))[0]).toMatchObject({
      description: 'Lobby kiosks, two each',
    });
    // Emptied for the next group, whose key is then the server's default: no limit, 14 days.
    expect(await form.getByLabel('Enrollments allowed').inputValue()).toBe('');
    await form.getByLabel('New group').fill('Plain');
    await form.getByRole('button', { name: 'Create group' }).click();
    await page.getByRole('row', { name: /^Plain\b/ }).waitFor();
    const plain = (await server.admin.groups.list.query({})).find((g) => g.name === 'Plain')!;
    const plainKey = await server.admin.provisioningKeys.get.query({ groupId: plain.id });
    expect(plainKey.maxUses).toBeNull();
    expect(plain.description).toBe('');
    expect(Date.parse(plainKey.expiresAt) - Date.parse(plainKey.createdAt)).toBe(14 * DAY_MS);
    await context.close();
  });

  it('the key dialog fits a phone-wide window: its buttons are on screen, and it opens on Copy', async () => {
    await using server = await startTestServer();
    await server.admin.groups.create.mutate({ name: 'Narrow', ttl: '1d' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await page.setViewportSize({ width: 390, height: 844 });
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('button', { name: 'Actions for Narrow' }).click();
    await page.getByRole('menuitem', { name: 'View Provisioning Key' }).click();
    const dialog = page.getByRole('dialog', { name: /Narrow/ });
    const copy = dialog.getByRole('button', { name: 'Copy', exact: true });
    await copy.waitFor();
    for (const name of ['Copy', 'Regenerate', 'Close']) {
      const box = (await dialog.getByRole('button', { name, exact: true }).boundingBox())!;
      expect(box.x, name).toBeGreaterThanOrEqual(0);
      expect(box.x + box.width, name).toBeLessThanOrEqual(390);
    }
    await expect
      .poll(() =>
        page.evaluate<string | null>('document.activeElement && document.activeElement.textContent'),
      )
      .toBe('Copy');
    await screenshot(page, 'key-dialog-narrow');
    // Deleted elsewhere (the CLI, another tab) while the dialog is open: it closes and says so,
    // rather than go on showing an Active key that enrolls no one.
    const [group] = await server.admin.groups.list.query({});
    await server.admin.groups.delete.mutate({ groupId: group!.id });
    await dialog.waitFor({ state: 'detached' });
    await page
      .getByTestId('groups-notice')
      .getByText('Narrow was deleted elsewhere: its key enrolls no one.')
      .waitFor();
    await context.close();
  });

  it('a key that expires while the groups page is open shows Expired without a reload (the column was worked out once)', async () => {
    await using server = await startTestServer({ clock: realTimeClock() });
    await server.admin.groups.create.mutate({ name: 'Brief', ttl: '6s' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    const row = page.getByRole('row', { name: /^Brief\b/ });
    await row.getByText(/in \d+ seconds?/).waitFor();
    await row.getByText('Expired', { exact: true }).waitFor({ timeout: 20_000 });
    await context.close();
  });

  it('an expired key shows Copy dimmed with the reason; Regenerate (confirmed) gives a key that enrolls', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Edge' });
    server.clock.advance(15 * DAY_MS);
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    const row = page.getByRole('row', { name: /^Edge\b/ });
    await row.getByText('Expired').waitFor();

    // The row's menu by keyboard alone: focus the button, Enter opens it on its first item.
    await row.getByRole('button', { name: 'Actions for Edge' }).focus();
    await page.keyboard.press('Enter');
    const menu = page.getByRole('menu', { name: 'Actions for Edge' });
    await expect
      .poll(() => page.evaluate<string | null>('document.activeElement?.textContent ?? null'))
      .toBe('View Provisioning Key');
    expect(await menu.getByRole('menuitem').allTextContents()).toEqual([
      'View Provisioning Key',
      'Rename',
      'Disable',
      'Delete',
    ]);
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Connector Provisioning Key - Edge' });
    await dialog.getByText('Expired', { exact: true }).waitFor();
    const copy = dialog.getByRole('button', { name: 'Copy', exact: true });
    expect(await copy.isDisabled()).toBe(true);
    await dialog.getByText(/This key expired .*: regenerate it to get a new one\./).waitFor();
    expect(await seriousA11yViolations(page)).toEqual([]);
    await screenshot(page, 'key-expired');

    await dialog.getByRole('button', { name: 'Regenerate' }).click();
    const confirm = page.getByRole('dialog', { name: 'Regenerate the key of Edge?' });
    await confirm.getByText('The current key stops working at once').waitFor();
    await confirm.getByText('Connectors already enrolled are unaffected').waitFor();
    await confirm.getByRole('button', { name: 'Regenerate key' }).click();

    const fresh = page.getByRole('dialog', { name: 'Connector Provisioning Key - Edge' });
    await fresh.getByText('Active', { exact: true }).waitFor();
    await fresh.getByRole('button', { name: 'Copy', exact: true }).click();
    await fresh.getByText('Key copied to the clipboard.').waitFor();
    const copied = await page.evaluate<string>('navigator.clipboard.readText()');
    expect(copied).toBe((await server.admin.provisioningKeys.get.query({ groupId: group.id })).key);
    const enrolled = await enrollSim(server.url, copied, 'edge-1');
    expect(enrolled.ok).toBe(true);
    await context.close();
  });

  it('Copy works without the clipboard API (plain http off loopback has none): the copy-command fallback', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Plain' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    // What a page served over plain http from another host sees: no secure context, no clipboard API.
    // (A script in the page's own terms: the tests are typed without the DOM.) The copy event
    // records what the fallback's text area had selected when the copy command ran.
    await page.addInitScript({
      content: `
        Object.defineProperty(window, 'isSecureContext', { value: false });
        Object.defineProperty(navigator, 'clipboard', { value: undefined });
        document.addEventListener('copy', () => {
          const area = document.querySelector('textarea.offscreen');
          window.__copied = area ? area.value.slice(area.selectionStart, area.selectionEnd) : '';
        });`,
    });
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('button', { name: 'Actions for Plain' }).click();
    await page.getByRole('menuitem', { name: 'View Provisioning Key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Connector Provisioning Key - Plain' });
    await dialog.getByRole('button', { name: 'Copy', exact: true }).click();
    await dialog.getByText('Key copied to the clipboard.').waitFor();
    // Headless Chromium runs the copy command without a system clipboard behind it, so what the
    // command copied is read where it happens: the selection when the 'copy' event fires.
    const copied = await page.evaluate<string>('window.__copied ?? ""');
    expect(copied).toBe((await server.admin.provisioningKeys.get.query({ groupId: group.id })).key);
    await context.close();
  });

  it('a read-scope key gets a read-only console: every mutating control disabled with the reason', async () => {
    await using server = await startTestServer();
    await server.admin.groups.create.mutate({ name: 'Lab' });
    const { key: readKey } = await server.admin.apiKeys.create.mutate({ name: 'viewer', scope: 'read' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, readKey);
    await page.getByText('Read-only', { exact: true }).waitFor();
    expect(await page.getByRole('button', { name: 'Create group' }).isDisabled()).toBe(true);
    await page.getByText('Read-only: you signed in with a read-scope API key.').first().waitFor();
    // Next Steps does not tell it to copy a key it cannot copy.
    const nextSteps = page.getByRole('region', { name: 'Next Steps — Deploy Your Connectors' });
    expect(await nextSteps.textContent()).toContain("An admin key can copy a group's provisioning key");
    expect(await nextSteps.textContent()).not.toContain("Copy a group's");

    const row = page.getByRole('row', { name: /^Lab\b/ });
    await row.getByRole('button', { name: 'Actions for Lab' }).click();
    const items = page.getByRole('menu', { name: 'Actions for Lab' }).getByRole('menuitem');
    for (const label of ['Rename', 'Disable', 'Delete']) {
      const item = items.filter({ hasText: label });
      expect(await item.getAttribute('aria-disabled')).toBe('true');
      expect(await item.textContent()).toContain('read-scope API key');
      await item.click({ force: true });
      expect(await page.getByRole('dialog').count()).toBe(0);
    }
    expect(await seriousA11yViolations(page)).toEqual([]);
    await screenshot(page, 'groups-read-only');
    await items.filter({ hasText: 'View Provisioning Key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Connector Provisioning Key - Lab' });
    await dialog.getByText('Active', { exact: true }).waitFor();
    expect(await dialog.getByRole('button', { name: 'Copy', exact: true }).isDisabled()).toBe(true);
    expect(await dialog.getByRole('button', { name: 'Regenerate' }).isDisabled()).toBe(true);
    expect(await dialog.getByRole('button', { name: 'Reveal' }).count()).toBe(0);
    // The server did not give the secret to the read key: only the masked form is in the page.
    const { key } = await server.admin.provisioningKeys.get.query({
      groupId: (await server.admin.groups.list.query({}))[0]!.id,
    });
    expect(await page.content()).not.toContain(key!);
    await context.close();
  });

  it('a key deleted while signed in sends the console back to sign-in with a message', async () => {
    await using server = await startTestServer();
    const second = await server.admin.apiKeys.create.mutate({ name: 'temp', scope: 'admin' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, second.key);
    await server.admin.apiKeys.delete.mutate({ id: second.id });
    // Either way to the same end: the console's live feed closes with the key, and the fetch it
    // makes then is refused (the page may sign out before any click: Refresh is then gone), or the
    // admin's next call, Refresh, is refused.
    const signInShown = page.getByLabel('Admin API key');
    await Promise.race([
      page
        .getByRole('button', { name: 'Refresh' })
        .click()
        .catch(() => {}),
      signInShown.waitFor(),
    ]);
    await signInShown.waitFor();
    await page
      .getByText(
        "Signed out: the server refused the API key (A valid admin API key is required): it was deleted, it expired, or it is not this server's. Sign in with a valid key.",
      )
      .waitFor();
    expect(await page.evaluate<string>('JSON.stringify(sessionStorage)')).not.toContain(second.key);
    // A wrong key never gets in.
    await page.getByLabel('Admin API key').fill(second.key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page
      .getByRole('alert')
      .getByText(/Sign-in failed: .*ADMIN_KEY_INVALID/)
      .waitFor();
    // A provisioning key pasted by mistake: said so, and not sent (no refused admin call counted).
    const failuresBefore = await adminAuthFailures(server.url);
    const group = await server.admin.groups.create.mutate({ name: 'Pasted' });
    const provisioning = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    await page.getByLabel('Admin API key').fill(provisioning);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page
      .getByRole('alert')
      .getByText(/that is a provisioning key \(cpk_…\), which agents enroll with/)
      .waitFor();
    expect(await adminAuthFailures(server.url)).toBe(failuresBefore);
    await context.close();
  });

  it('a hostile group name renders as text, and the CSP blocks an inline script', async () => {
    await using server = await startTestServer();
    const hostile = '<img src=x onerror="window.pwned=1">';
    await server.admin.groups.create.mutate({ name: hostile });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    const rowHeader = page.getByRole('rowheader', { name: hostile });
    expect(await rowHeader.textContent()).toBe(hostile);
    expect(await page.locator('img').count()).toBe(0);
    expect(await page.evaluate<unknown>('window.pwned')).toBeUndefined();

    const violation = page.evaluate<string>(
      `new Promise((resolve) => document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective), { once: true }))`,
    );
    await page.evaluate(
      `(() => { const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1'; document.body.append(s); })()`,
    );
    expect(await violation).toMatch(/^script-src/);
    expect(await page.evaluate<unknown>('window.inlineRan')).toBeUndefined();
    await context.close();
  });
});

/** connector_admin_auth_failures_total on the server's /metrics. */
async function adminAuthFailures(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^connector_admin_auth_failures_total (\d+)$/m.exec(text)?.[1] ?? Number.NaN);
}
