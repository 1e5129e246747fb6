import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnAgent } from '../helpers/agents.js';
import { seriousA11yViolations } from '../helpers/axe.js';
import { consoleContext, launchBrowser, screenshot, signIn } from '../helpers/browser.js';
import { realTimeClock, startTestServer } from '../helpers/server.js';

/**
 * The admin's story on the Connector Groups page, in a real Chromium against a real server and a
 * real agent: sign in, create a group, find it under Next Steps, copy its key, enroll a host with it.
 */
describe('console: connector groups', () => {
  let browser: Awaited<ReturnType<typeof launchBrowser>>;
  beforeAll(async () => {
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('sign in → create a group → Next Steps → View Provisioning Key → Copy → a real agent enrolls with it', async () => {
    await using server = await startTestServer({ clock: realTimeClock() });
    const context = await consoleContext(browser, server.url);
    const page = await context.newPage();
    const work = await mkdtemp(join(tmpdir(), 'ce-console-'));
    try {
      await page.goto(`${server.url}/`);
      expect(await seriousA11yViolations(page)).toEqual([]);
      await screenshot(page, 'sign-in');
      await signIn(page, server.url, server.adminKey);
      await page.getByRole('status').getByText('Live', { exact: true }).waitFor();
      // Kept for this tab only: in sessionStorage, never in localStorage or a cookie.
      expect(await page.evaluate<string>('JSON.stringify(sessionStorage)')).toContain(server.adminKey);
      expect(await page.evaluate<number>('localStorage.length')).toBe(0);
      expect(await context.cookies()).toEqual([]);

      await page.getByLabel('New group').fill('Lab');
      await page.getByRole('button', { name: 'Create group' }).click();
      const nextSteps = page.getByRole('region', { name: 'Next Steps — Deploy Your Connectors' });
      await nextSteps.getByText('Lab', { exact: true }).waitFor();
      const row = page.getByRole('row', { name: /^Lab\b/ });
      await expect.poll(() => row.locator('.connector-counts').textContent()).toBe('0 / 0');
      expect(await seriousA11yViolations(page)).toEqual([]);
      await screenshot(page, 'groups');

      await nextSteps.getByRole('button', { name: 'View Provisioning Key of Lab' }).click();
      const dialog = page.getByRole('dialog', { name: 'Connector Provisioning Key - Lab' });
      await dialog.waitFor();
      const { groups } = { groups: await server.admin.groups.list.query({}) };
      const { key } = await server.admin.provisioningKeys.get.query({ groupId: groups[0]!.id });
      // Masked until revealed.
      const shown = dialog.getByTestId('provisioning-key');
      expect(await shown.textContent()).toBe(`cpk_••••••••${key!.slice(-4)}`);
      await dialog.getByRole('button', { name: 'Reveal' }).click();
      expect(await shown.textContent()).toBe(key);
      // The commands never hold the key, revealed or not: a key in a command line ends in the
      // shell's history. It is pasted into the save command's `cat`.
      for (const command of await dialog.locator('pre.command').allTextContents())
        expect(command).not.toContain(key!.slice(4));
      // The server has no --public-url and listens on 127.0.0.1: the command reaches it from this
      // host only, which is said beside it.
      expect(await dialog.getByTestId('loopback-note').textContent()).toContain(
        `${new URL(server.url).host} reaches this server from its own host only`,
      );
      await dialog.getByRole('button', { name: 'Copy', exact: true }).click();
      await dialog.getByText('Key copied to the clipboard.').waitFor();
      expect(await page.evaluate<string>('navigator.clipboard.readText()')).toBe(key);
      expect(await seriousA11yViolations(page)).toEqual([]);
      await screenshot(page, 'key-dialog');

      // Another admin regenerates the key while this dialog is open: it shows the new one, the old
      // one's "copied" and reveal go, and Copy copies the key that works.
      const regenerated = (await server.admin.provisioningKeys.regenerate.mutate({ groupId: groups[0]!.id }))
        .key!;
      await expect.poll(() => shown.textContent()).toBe(`cpk_••••••••${regenerated.slice(-4)}`);
      expect(await dialog.getByText('Key copied to the clipboard.').count()).toBe(0);
      await dialog.getByRole('button', { name: 'Copy', exact: true }).click();
      await dialog.getByText('Key copied to the clipboard.').waitFor();
      const copied = await page.evaluate<string>('navigator.clipboard.readText()');
      expect(copied).toBe(regenerated);

      // The host's side, as the dialog says: the copied save command run in a shell with the copied
      // key pasted into it (Enter, then Ctrl-D), then the copied run command.
      await dialog.getByRole('button', { name: 'Copy save command' }).click();
      const saveCommand = await page.evaluate<string>('navigator.clipboard.readText()');
      await dialog.getByRole('button', { name: 'Copy run command' }).click();
      const runCommand = await page.evaluate<string>('navigator.clipboard.readText()');
      expect(runCommand).not.toContain(copied.slice(4));
      await dialog.getByRole('button', { name: 'Close' }).click();
      // A file of that name from before, readable by all: the key does not go into it as it is.
      await writeFile(join(work, 'connector.key'), 'old\n', { mode: 0o644 });
      const pasted = spawnSync('sh', ['-c', saveCommand], {
        cwd: work,
        input: `${copied}\n`,
        timeout: 10_000,
      });
      expect(pasted.status).toBe(0);
      const keyFile = join(work, 'connector.key');
      expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
      expect(await readFile(keyFile, 'utf8')).toBe(`${copied}\n`);
      const [program, ...runArgs] = runCommand.split(' ');
      expect(program).toBe('connector-agent');
      // No --state-dir: the agent's default (the unit's, as root) is where a later unit finds it.
      expect(runArgs).toEqual(['--server', server.url, '--key-file', 'connector.key']);
      // Relative paths are the host's working directory: here, `work`; the state dir is the test's.
      const agent = spawnAgent(
        ['--server', runArgs[1]!, '--key-file', keyFile],
        join(work, 'connector-state'),
      );
      try {
        // Without a reload or a click, the row shows the connector connected and the group leaves
        // Next Steps: the console.changes feed told the page.
        await expect
          .poll(() => row.locator('.connector-counts').textContent(), { timeout: 30_000, interval: 100 })
          .toBe('1 / 1');
        expect(await nextSteps.count()).toBe(0);
        await screenshot(page, 'groups-with-connector');
      } finally {
        await agent.stop();
      }
    } finally {
      await context.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
