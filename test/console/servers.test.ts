import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSim, enrollSim } from '../helpers/agent-sim.js';
import { seriousA11yViolations } from '../helpers/axe.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { freshDatabase } from '../helpers/postgres.js';
import { startReplicas, stopAll } from '../helpers/replicas.js';
import { startTestServer } from '../helpers/server.js';

/** Admin › Servers in a real Chromium: the replicas of a deployment, or the one server. */
describe('console: servers page', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('lists both replicas of a PostgreSQL deployment with their sessions, marks its own, and drops one that stops', async () => {
    await using db = await freshDatabase();
    const [a, b] = await startReplicas(db.url, 2);
    try {
      const group = await a!.admin.groups.create.mutate({ name: 'Served' });
      const key = (await a!.admin.provisioningKeys.get.query({ groupId: group.id })).key!;
      const session = connectSim(b!.url, (await enrollSim(b!.url, key, 'on-b')).enrolled!);
      await session.waitFor('ready', 10_000);

      const context = await consoleContext(browser, a!.url);
      const page = await context.newPage();
      await signIn(page, a!.url, a!.adminKey);
      await page.getByRole('link', { name: 'Servers' }).click();
      await page.getByRole('heading', { name: 'Servers', level: 1 }).waitFor();
      const rowOf = (url: string) =>
        page.getByRole('row', { name: new RegExp(`^${url.replaceAll('.', '\\.')}\\b`) });
      // B's claim reaches the table within ~50 ms; Refresh until it shows (bounded).
      await expect
        .poll(async () => {
          await page.getByRole('button', { name: 'Refresh' }).click();
          return (await rowOf(b!.url).getByRole('cell').allTextContents()).at(-1);
        })
        .toBe('1');
      await rowOf(a!.url).getByText('this console’s server').waitFor();
      expect(await rowOf(b!.url).getByText('this console’s server').count()).toBe(0);
      expect(await rowOf(a!.url).getByRole('cell').allTextContents()).toEqual(
        expect.arrayContaining(['live', String(process.pid), '0']),
      );
      expect(await page.getByTestId('servers-summary').textContent()).toMatch(
        /^2 live replicas of 2 on PostgreSQL; a heartbeat older than 15 s counts as dead\. 1 agent session\.$/,
      );
      expect(await seriousA11yViolations(page)).toEqual([]);
      await screenshot(page, 'servers');

      // The group's connectors say which replica holds the live session: B, by its URL's host.
      await page.goto(`${a!.url}/#/groups/${group.id}`);
      const connection = page.getByRole('row', { name: /^on-b\b/ }).locator('td.connection');
      await expect.poll(() => connection.textContent()).toBe(`Connected via ${new URL(b!.url).host}`);
      expect(await seriousA11yViolations(page)).toEqual([]);
      await page.getByRole('link', { name: 'Servers' }).click();
      await page.getByRole('heading', { name: 'Servers', level: 1 }).waitFor();

      await session.close();
      await stopAll([b!]);
      await page.getByRole('button', { name: 'Refresh' }).click();
      await expect.poll(() => rowOf(b!.url).count()).toBe(0);
      expect(await page.getByTestId('servers-summary').textContent()).toMatch(/^1 live replica of 1 /);
      await context.close();
    } finally {
      await stopAll([a!, b!]);
    }
  });

  it('one server on the embedded store: itself alone, no heartbeat', async () => {
    await using server = await startTestServer();
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    await signIn(page, server.url, server.adminKey);
    await page.getByRole('link', { name: 'Servers' }).click();
    await expect
      .poll(() => page.getByTestId('servers-summary').textContent())
      .toMatch(/^One server on the embedded store\./);
    expect(await page.getByRole('row').count()).toBe(2);
    await page.getByRole('row', { name: new RegExp(`^${server.url.replaceAll('.', '\\.')}\\b`) }).waitFor();
    await context.close();
  });
});
