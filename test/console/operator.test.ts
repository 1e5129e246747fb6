import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSim, enrollSim } from '../helpers/agent-sim.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { freePort } from '../helpers/processes.js';
import { startTestServer } from '../helpers/server.js';

/** What a new operator tripped on in the console, each found by trying it as they did. */
describe('console: an operator’s first hour', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('a server with a --public-url: the agent command uses it, and a console open at another address says to open it there', async () => {
    const port = await freePort();
    const publicUrl = `http://localhost:${port}`;
    await using server = await startTestServer({ config: { port, publicUrl } });
    await server.admin.groups.create.mutate({ name: 'Remote' });
    // Open at 127.0.0.1, where it listens: it was told it is reached at localhost.
    const direct = `http://127.0.0.1:${port}`;
    const elsewhere = await consoleContext(browser, direct);
    const page = await elsewhere.newPage();
    await signIn(page, direct, server.adminKey);
    const notice = page.getByTestId('console-elsewhere');
    await notice.waitFor();
    expect(await notice.textContent()).toContain(`This server is reached at ${publicUrl} (its --public-url)`);
    expect(await notice.getByRole('link').getAttribute('href')).toBe(publicUrl);
    await page.getByRole('button', { name: 'View Provisioning Key of Remote' }).click();
    expect(await page.getByTestId('run-agent-command').textContent()).toBe(
      `connector-agent --server ${publicUrl} --key-file connector.key`,
    );
    await elsewhere.close();
    // Open where it is reached: no notice, and the live feed is let in.
    const there = await consoleContext(browser, publicUrl);
    const right = await there.newPage();
    await signIn(right, publicUrl, server.adminKey);
    await right.getByRole('status').getByText('Live', { exact: true }).waitFor();
    expect(await right.getByTestId('console-elsewhere').count()).toBe(0);
    await there.close();
  });

  it('a double-clicked Create key makes one key, and Copy says it copied', async () => {
    await using server = await startTestServer();
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Admin › API Keys' }).click();
    await page.getByLabel('New API key').fill('dbl');
    await page.getByRole('button', { name: 'Create key' }).dblclick();
    const shown = page.getByRole('dialog', { name: 'API key dbl created' });
    await shown.waitFor();
    await shown.getByRole('button', { name: 'Copy' }).click();
    await shown.getByRole('status').getByText('Key copied to the clipboard.').waitFor();
    const named = (await server.admin.apiKeys.list.query({})).filter((k) => k.name === 'dbl');
    expect(named).toHaveLength(1);
    // The server refuses a second key of the name too: it could not be told apart.
    await expect(server.admin.apiKeys.create.mutate({ name: 'DBL', scope: 'read' })).rejects.toMatchObject({
      data: { reason: 'NAME_TAKEN' },
      message: 'An API key named "dbl" already exists.',
    });
    await context.close();
  });

  it('a disabled group says so in its key dialog and on its connectors page; a row menu gives focus back to its button', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Paused' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    const session = connectSim(server.url, (await enrollSim(server.url, key, 'paused-1')).enrolled!);
    await session.waitFor('ready');
    await server.admin.groups.disable.mutate({ groupId: group.id });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);

    await page
      .getByRole('row', { name: /^Paused\b/ })
      .getByRole('button', { name: /^Actions for/ })
      .click();
    await page.getByRole('menuitem', { name: 'View Provisioning Key' }).click();
    await expect
      .poll(() => page.getByTestId('key-group-disabled').textContent())
      .toContain('this key enrolls no host (GROUP_DISABLED)');
    await page.keyboard.press('Escape');

    await page.getByRole('link', { name: 'Paused' }).click();
    await page.getByTestId('group-disabled').waitFor();
    await page.getByText('1 enabled (disabled with the group), 0 disabled', { exact: false }).waitFor();
    const row = page.getByRole('row', { name: /paused-1/ });
    await row.getByText('disabled (group)', { exact: true }).waitFor();
    // Keyboard only: the menu button, Enter, down to Disable, Enter; Escape closes the dialog and
    // focus is back on the menu button, not lost to the page.
    const menuButton = row.getByRole('button', { name: 'Actions for paused-1' });
    await menuButton.focus();
    await page.keyboard.press('Enter');
    await page.getByRole('menuitem', { name: 'Disable' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'Disable paused-1?' }).waitFor();
    await page.keyboard.press('Escape');
    await expect
      .poll(() => page.evaluate<string | null>('document.activeElement?.getAttribute("aria-label") ?? null'))
      .toBe('Actions for paused-1');
    await session.close();
    await context.close();
  });

  it('Revoke says what came of it; a group that gained a connector while its Delete dialog was open is not deleted unseen', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Outcomes' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    await enrollSim(server.url, key, 'offline-1');
    const empty = await server.admin.groups.create.mutate({ name: 'Empty' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);

    await page.getByRole('link', { name: 'Outcomes' }).click();
    const row = page.getByRole('row', { name: /offline-1/ });
    await row.getByRole('button', { name: 'Actions for offline-1' }).click();
    await page.getByRole('menuitem', { name: 'Revoke' }).click();
    // Enter in the Reason field revokes, as Enter in Rename's fields renames (it did nothing); the
    // focus starts there and ends back on the row's menu button.
    const reason = page.getByRole('dialog', { name: 'Revoke offline-1?' }).getByLabel(/^Reason/);
    await expect
      .poll(() => page.evaluate<string | null>('document.activeElement?.id ?? null'))
      .toBe('revoke-reason');
    await reason.pressSequentially('host retired');
    await reason.press('Enter');
    await expect
      .poll(() => page.getByTestId('connector-outcome').textContent())
      .toBe(
        "offline-1 revoked; not yet confirmed by the host (it was offline, or did not answer in time). Its group's provisioning key was regenerated.",
      );
    const [revoked] = (await server.admin.connectors.list.query({ groupId: group.id })).items;
    expect(revoked).toMatchObject({ status: 'revoked', revokeReason: 'host retired' });
    await expect
      .poll(() => page.evaluate<string | null>('document.activeElement?.getAttribute("aria-label") ?? null'))
      .toBe('Actions for offline-1');

    await page.getByRole('link', { name: '← Connector Groups' }).click();
    // The tiles count the revoked connector as revoked, not as a disconnected one to look into.
    const tiles = page.getByRole('list', { name: 'Counts' });
    await expect
      .poll(() => tiles.getByRole('listitem').allTextContents())
      .toEqual(['2Groups', '1Connectors', '0Connected', '0Not connected', '1Revoked', '0Disabled groups']);
    await page
      .getByRole('row', { name: /^Empty\b/ })
      .getByRole('button', { name: /^Actions for/ })
      .click();
    await page.getByRole('menuitem', { name: 'Delete' }).click();
    const dialog = page.getByRole('dialog', { name: 'Delete Empty?' });
    await dialog.getByText('The group has no connectors.').waitFor();
    // A host enrolls with the group's key while the admin reads the dialog.
    const emptyKey = (await server.admin.provisioningKeys.get.query({ groupId: empty.id })).key!;
    await enrollSim(server.url, emptyKey, 'late-host');
    await dialog.getByRole('button', { name: 'Delete group' }).click();
    await dialog
      .getByRole('alert')
      .getByText('A host enrolled meanwhile: the group now has 1 connector(s).')
      .waitFor();
    await dialog.getByText('Its 1 connector(s) are deleted with it').waitFor();
    expect((await server.admin.groups.get.query({ groupId: empty.id })).counts.total).toBe(1);
    // Once it shows one, a second host enrolling is not deleted unseen either (expectedConnectors).
    await enrollSim(server.url, emptyKey, 'later-host');
    await dialog.getByRole('button', { name: 'Delete group' }).click();
    await dialog
      .getByRole('alert')
      .getByText('A host enrolled meanwhile: the group now has 2 connector(s).')
      .waitFor();
    expect((await server.admin.groups.get.query({ groupId: empty.id })).counts.total).toBe(2);
    await dialog
      .getByText(
        'Its 2 connector(s) are deleted with it. The 2 not connected are told when they next connect',
      )
      .waitFor();
    await dialog.getByRole('button', { name: 'Delete group' }).click();
    await expect
      .poll(async () => (await server.admin.groups.list.query({})).map((g) => g.name))
      .toEqual(['Outcomes']);
    // The row is gone; the page says what went with it.
    expect(await page.getByTestId('groups-notice').textContent()).toBe(
      'Deleted Empty and its 2 connector(s).',
    );
    await expect.poll(() => page.getByRole('row', { name: /^Empty\b/ }).count()).toBe(0);
    // A revoked connector's agent has stopped already: the dialog does not promise to tell it.
    await page
      .getByRole('row', { name: /^Outcomes\b/ })
      .getByRole('button', { name: /^Actions for/ })
      .click();
    await page.getByRole('menuitem', { name: 'Delete' }).click();
    const outcomes = page.getByRole('dialog', { name: 'Delete Outcomes?' });
    expect(await outcomes.locator('p').first().textContent()).toBe(
      "Its 1 connector(s) are deleted with it (1 of them revoked already). Those hosts must enroll again, with another group's key. Its provisioning key stops working at once.",
    );
    await outcomes.getByRole('button', { name: 'Cancel' }).click();
    await context.close();
  });

  it('the server gone: the page says it cannot be reached and marks what it shows as last loaded; restarted, it is live again within seconds', async () => {
    const port = await freePort();
    const server = await startTestServer({ config: { port } });
    try {
      const group = await server.admin.groups.create.mutate({ name: 'Gone' });
      const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      await enrollSim(server.url, key, 'gone-1');
      const context = await consoleContext(browser, server.url);
      const page = await context.newPage();
      // The feed's retries wait the longest their jitter allows: the restart below then fell in a 16 s
      // wait, and the page stayed "Live updates off" for ~14 s after the server was back.
      await page.addInitScript({ content: 'Math.random = () => 0.999;' });
      let sockets = 0;
      page.on('websocket', () => {
        sockets++;
      });
      await signIn(page, server.url, server.adminKey);
      await page.getByRole('link', { name: 'Gone' }).click();
      await page.getByRole('row', { name: /gone-1/ }).waitFor();
      const status = page.getByRole('status').filter({ hasText: /^(Live|Live updates off|Connecting…)$/ });
      await status.getByText('Live', { exact: true }).waitFor();
      await server.stop();
      const stoppedAt = Date.now();
      await page.getByRole('button', { name: 'Refresh' }).click();
      await expect
        .poll(() => page.getByRole('alert').first().textContent())
        .toContain('The server cannot be reached: it may be stopped or restarting');
      await page.getByText('Connectors, as last loaded (may be out of date)').waitFor();
      // An action is not retried by the page: its error says to try again, not that it will.
      await page.getByRole('button', { name: 'Actions for gone-1' }).click();
      await page.getByRole('menuitem', { name: 'Disable' }).click();
      const dialog = page.getByRole('dialog');
      await dialog.getByRole('button', { name: 'Disable connector' }).click();
      await dialog
        .getByRole('alert')
        .getByText(/The server cannot be reached: .* Try again once it is back/)
        .waitFor();
      await dialog.getByRole('button', { name: 'Cancel' }).click();
      // Reconnect now tries at once, whatever the wait.
      await status.getByText('Live updates off', { exact: true }).waitFor();
      const before = sockets;
      await page.getByRole('button', { name: 'Reconnect now' }).click();
      await expect.poll(() => sockets, { timeout: 1000 }).toBeGreaterThan(before);

      await new Promise((resolve) => setTimeout(resolve, Math.max(0, stoppedAt + 16_000 - Date.now())));
      await using _restarted = await startTestServer({ dataDir: server.dataDir, config: { port } });
      const backAt = Date.now();
      await status.getByText('Live', { exact: true }).waitFor({ timeout: 30_000 });
      // The feed was live a moment ago: its retries stay 3 s apart, not 30.
      expect(Date.now() - backAt).toBeLessThan(7_000);
      await page.getByText('Connectors', { exact: true }).waitFor();
      expect(await page.getByRole('alert').count()).toBe(0);
      await context.close();
    } finally {
      await server.stop();
    }
  });

  it('no word in a table is broken mid-word, at 1280 and at 390 px, on every page', async () => {
    await using server = await startTestServer();
    const group = await server.admin.groups.create.mutate({ name: 'Web servers in the second datacenter' });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    for (const name of ['web-01', 'web-02', 'database-replica-eu-west-1'])
      await enrollSim(server.url, key, name);
    const [revoked] = (await server.admin.connectors.list.query({ groupId: group.id })).items;
    await server.admin.connectors.revoke.mutate({ connectorId: revoked!.id });
    await server.admin.apiKeys.create.mutate({ name: 'viewer', scope: 'read' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    for (const width of [1280, 390]) {
      await page.setViewportSize({ width, height: 900 });
      for (const [hash, rows] of [
        ['#/groups', 1],
        [`#/groups/${group.id}`, 3],
        ['#/api-keys', 2],
        ['#/audit', 5],
        ['#/servers', 1],
      ] as const) {
        await page.goto(`${server.url}/${hash}`);
        await expect.poll(() => page.locator('main tbody tr').count()).toBeGreaterThanOrEqual(rows);
        expect(await brokenWords(page), `${hash} at ${width} px`).toEqual([]);
      }
    }
    await context.close();
  });

  it('at 1280, 400 and 390 px nothing runs off the side of the page, 64-letter names with no break in them included, and Sign out stays in reach', async () => {
    await using server = await startTestServer();
    // The longest names the API takes, with nowhere to break: a group waiting in Next Steps, a group
    // and its connector (its name and hostname reported by the host), an API key.
    await server.admin.groups.create.mutate({ name: 'N'.repeat(64) });
    const group = await server.admin.groups.create.mutate({ name: 'G'.repeat(64) });
    const key = (await server.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
    await enrollSim(server.url, key, 'C'.repeat(64));
    await server.admin.apiKeys.create.mutate({ name: 'K'.repeat(64), scope: 'read' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    // A script, not a function: the tests are type-checked without the DOM's types.
    const widths = () =>
      page.evaluate<{ page: number; main: number; mainShown: number; steps: number; names: number[] }>(
        `(() => {
          const main = document.querySelector('main');
          const steps = document.querySelector('.next-steps');
          return {
            page: document.documentElement.scrollWidth,
            main: main.scrollWidth,
            mainShown: main.clientWidth,
            steps: steps ? steps.scrollWidth - steps.clientWidth : 0,
            names: [...document.querySelectorAll('th.group-name')].map((cell) => cell.getBoundingClientRect().width),
          };
        })()`,
      );
    for (const width of [1280, 400, 390]) {
      await page.setViewportSize({ width, height: 800 });
      for (const hash of ['#/groups', `#/groups/${group.id}`, '#/api-keys', '#/audit', '#/servers']) {
        await page.goto(`${server.url}/${hash}`);
        await expect.poll(() => page.locator('main tbody tr').count()).toBeGreaterThan(0);
        const seen = await widths();
        expect(seen.page, `${hash} at ${width} px`).toBeLessThanOrEqual(width);
        // A wide window holds every table whole. In a narrow one a table may scroll inside the page
        // (the connectors' nine columns do), but a name wraps within 20 letters rather than widen it.
        if (width === 1280)
          expect(seen.main, `${hash}'s content at ${width} px`).toBeLessThanOrEqual(seen.mainShown);
        expect(seen.steps, `Next Steps at ${width} px`).toBe(0);
        if (width < 1280)
          for (const name of seen.names)
            expect(name, `a group's name at ${width} px`).toBeLessThanOrEqual(336);
        const heading = (await page.getByRole('heading', { level: 1 }).boundingBox())!;
        expect(heading.x + heading.width, `${hash}'s heading at ${width} px`).toBeLessThanOrEqual(width);
        const signOut = (await page.getByRole('button', { name: 'Sign out' }).boundingBox())!;
        expect(signOut.x + signOut.width).toBeLessThanOrEqual(width);
      }
    }
    await screenshot(page, 'long-names-narrow');
    await context.close();
  });

  it('a row menu near the bottom of the window opens upward, whole in view; one near the top opens downward', async () => {
    await using server = await startTestServer();
    for (let i = 0; i < 12; i++)
      await server.admin.groups.create.mutate({ name: `Site ${String(i).padStart(2, '0')}` });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await page.setViewportSize({ width: 1000, height: 600 });
    await signIn(page, server.url, server.adminKey);
    const viewport = page.viewportSize()!;
    const menuOf = async (name: string) => {
      const button = page
        .getByRole('row', { name: new RegExp(`^${name}\\b`) })
        .getByRole('button', { name: /^Actions for/ });
      await button.scrollIntoViewIfNeeded();
      await button.click();
      const menu = page.getByRole('menu');
      await menu.waitFor();
      const box = (await menu.boundingBox())!;
      const anchor = (await button.boundingBox())!;
      await page.keyboard.press('Escape');
      return { box, anchor };
    };
    // Scrolled to the end: the last row sits at the bottom of the window.
    await page.evaluate('window.scrollTo(0, document.body.scrollHeight)');
    const last = await menuOf('Site 11');
    expect(last.box.y + last.box.height).toBeLessThanOrEqual(viewport.height);
    expect(last.box.y + last.box.height).toBeLessThanOrEqual(last.anchor.y + 1);
    await page.evaluate('window.scrollTo(0, 0)');
    const first = await menuOf('Site 00');
    expect(first.box.y).toBeGreaterThanOrEqual(first.anchor.y + first.anchor.height - 1);
    await context.close();
  });

  it('Audit: times to the second, each event’s details, and a type no event has is told what it may have meant', async () => {
    await using server = await startTestServer();
    await server.admin.groups.create.mutate({ name: '<b>bold</b>' });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Audit' }).click();
    const created = page.getByRole('row', { name: /group\.created/ });
    await created.waitFor();
    expect(await created.locator('td').first().textContent()).toMatch(/\d{1,2}:\d\d:\d\d/);
    // Hostile text is shown as text.
    expect(await created.locator('td.details').textContent()).toContain('name="<b>bold</b>"');
    await page.getByLabel('Type').fill('Enrolment');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect
      .poll(() => page.getByTestId('audit-empty').textContent())
      .toContain('No event type is "enrolment" or starts with "enrolment.". Did you mean "enrollment"?');
    await context.close();
  });
});

/**
 * The words of table cells that the page shows on more than one line (each word's text range has
 * client rects at two heights). Ids, keys, host names and audit details may break anywhere (a long
 * token must fit somewhere), and text for screen readers only is not shown: they are left out. A
 * hyphen is a place to break like a space ("web-" / "02" is fine; "Hostnam" / "e" is not).
 */
function brokenWords(page: Page): Promise<string[]> {
  // A script, not a function: the tests are type-checked without the DOM's types.
  return page.evaluate<string[]>(`(() => {
    const broken = [];
    const main = document.querySelector('main');
    if (!main) return broken;
    const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(), seen = 0; node && seen < 20000; node = walker.nextNode(), seen++) {
      const cell = node.parentElement && node.parentElement.closest('th, td');
      if (!cell || node.parentElement.closest('.hostname, .details, code, .key, .offscreen')) continue;
      for (const word of (node.textContent || '').matchAll(/[^\\s-]+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const tops = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
        if (tops.size > 1) broken.push(word[0]);
      }
    }
    return broken;
  })()`);
}
