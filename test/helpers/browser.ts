import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import chromium from '@sparticuz/chromium';
import { type Browser, type BrowserContext, type Page, chromium as playwright } from 'playwright-core';

/** Where browser tests save a screenshot of each page they visit (git-ignored), for a person to look at. */
export const SCREENSHOT_DIR = fileURLToPath(new URL('../../.screenshots/', import.meta.url));

/**
 * A real headless Chromium from the npm package @sparticuz/chromium (nothing downloaded at run time),
 * driven by playwright-core. The package's `--single-process` is dropped: with it, closing one
 * context kills the whole browser.
 */
export async function launchBrowser(): Promise<Browser & AsyncDisposable> {
  const executablePath = await chromium.executablePath();
  const browser = await playwright.launch({
    executablePath,
    headless: true,
    args: chromium.args.filter((arg) => arg !== '--single-process'),
  });
  return Object.assign(browser, { [Symbol.asyncDispose]: () => browser.close() });
}

/** A fresh context (its own sessionStorage) on `origin`, allowed to read and write the clipboard. */
export async function consoleContext(
  browser: Browser,
  origin: string,
  options: { timezoneId?: string } = {},
): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...options });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  return context;
}

/** Signs in on the console's sign-in page with `adminKey` and waits for the groups page. */
export async function signIn(page: Page, url: string, adminKey: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.getByLabel('Admin API key').fill(adminKey);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Connector Groups', level: 1 }).waitFor();
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}
