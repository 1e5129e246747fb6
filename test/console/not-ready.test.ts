import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/agents.js';
import { seriousA11yViolations } from '../helpers/axe.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { startPostgres, withClient } from '../helpers/postgres.js';
import { startReplicas, stopAll } from '../helpers/replicas.js';
import type { TestServer } from '../helpers/server.js';

async function ready(server: TestServer): Promise<boolean> {
  return (await fetch(`${server.url}/healthz`)).status === 200;
}

/**
 * A replica that loses its database still shows what it holds; the console says what that is worth,
 * and stops saying it when the replica is ready again.
 */
describe('console: a replica that is not ready', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('shows a banner with the reason while PostgreSQL is away, the groups still listed, and none once it is back', async () => {
    // A cluster of its own: stopping the shared one would take every other test's database with it.
    await using pg = await startPostgres();
    await withClient(pg.url, (c) => c.query('CREATE DATABASE console_outage'));
    const url = new URL(pg.url);
    url.pathname = '/console_outage';
    const [server] = (await startReplicas(url.toString(), 1)) as [TestServer];
    try {
      await server.admin.groups.create.mutate({ name: 'Kept' });
      const context = await consoleContext(browser, server.url);
      const page = await context.newPage();
      await signIn(page, server.url, server.adminKey);
      await page.getByRole('cell', { name: 'Kept' }).waitFor();
      const banner = page.getByTestId('not-ready');
      expect(await banner.count()).toBe(0);

      await pg.stop();
      await eventually('not ready', async () => !(await ready(server)), 20_000);
      await page.getByRole('button', { name: 'Refresh' }).click();
      await banner.waitFor({ timeout: 10_000 });
      expect(await banner.textContent()).toMatch(
        /^This server is not ready \(the change feed .+\)\. It shows what it holds in memory, which may miss changes made through other servers since; changes fail until it is ready again\.$/,
      );
      expect(await banner.getAttribute('role')).toBe('status');
      // The groups it holds are still there to read.
      await page.getByRole('cell', { name: 'Kept' }).waitFor();
      expect(await seriousA11yViolations(page)).toEqual([]);
      await screenshot(page, 'not-ready');

      await pg.start();
      await eventually('ready again', () => ready(server), 60_000);
      // Bounded: the next answer without the header takes the banner away.
      await expect
        .poll(
          async () => {
            await page.getByRole('button', { name: 'Refresh' }).click();
            return banner.count();
          },
          { timeout: 15_000 },
        )
        .toBe(0);
      await context.close();
    } finally {
      await stopAll([server]);
    }
  });
});
