/**
 * Builds the admin console (web/) with Vite into web/dist, which the server serves at `/`.
 *
 *   npm run build:console               → always builds
 *   npm run build:console -- --if-stale → builds only when web/ or package-lock.json changed since the
 *                                         last build (what `npm start` and the tests run)
 *
 * Staleness is a sha256 of the inputs written beside the build (not mtimes, which a checkout resets).
 * The build goes to a temporary folder renamed into place, so a running server never reads half of one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WEB = join(ROOT, 'web');
const OUT = join(WEB, 'dist');
const STAMP = '.build-hash';

/** What a build depends on: every file under web/ but the build, and the locked dependency versions. */
async function inputsHash(): Promise<string> {
  const hash = createHash('sha256');
  const files: string[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'dist' && !entry.name.startsWith('dist.')) await walk(path);
      } else if (entry.isFile()) files.push(path);
    }
  };
  await walk(WEB);
  files.sort();
  files.push(join(ROOT, 'package-lock.json'), fileURLToPath(import.meta.url));
  for (const file of files) {
    hash
      .update(relative(ROOT, file))
      .update('\0')
      .update(await readFile(file))
      .update('\0');
  }
  return hash.digest('hex');
}

async function builtHash(): Promise<string | null> {
  try {
    await readFile(join(OUT, 'index.html'));
    return (await readFile(join(OUT, STAMP), 'utf8')).trim();
  } catch {
    return null;
  }
}

export interface BuildConsoleResult {
  built: boolean;
  ms: number;
}

/** Builds the console (or, with `ifStale`, only when its inputs changed). Throws ConsoleBuildError. */
export async function buildConsole(
  options: { ifStale?: boolean; log?: (line: string) => void } = {},
): Promise<BuildConsoleResult> {
  const started = performance.now();
  const log = options.log ?? ((line: string) => console.error(line));
  const hash = await inputsHash();
  if (options.ifStale && (await builtHash()) === hash) return { built: false, ms: 0 };
  log('building the admin console (web/ → web/dist) …');
  const temporary = join(WEB, `dist.${randomBytes(4).toString('hex')}`);
  // Vite and the React plugin follow a NODE_ENV already set (vitest sets 'test'): React's dev JSX
  // against its production runtime renders nothing. A production build, whoever runs it.
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  try {
    const [{ build }, { default: react }] = await Promise.all([
      import('vite'),
      import('@vitejs/plugin-react'),
    ]);
    await build({
      configFile: false,
      root: WEB,
      mode: 'production',
      base: '/',
      // Silent: a failure is reported as one line below, not as Vite's framed report.
      logLevel: 'silent',
      plugins: [react()],
      build: {
        outDir: temporary,
        emptyOutDir: true,
        // No inline script: the CSP forbids it, and the console needs no polyfill on current browsers.
        modulePreload: { polyfill: false },
        assetsInlineLimit: 0,
        sourcemap: false,
        reportCompressedSize: false,
      },
    });
    await writeFile(join(temporary, STAMP), `${hash}\n`);
    await rm(OUT, { recursive: true, force: true });
    await rename(temporary, OUT).catch(async (error) => {
      // Another build (a parallel test run) put its folder there first: it is as good as ours.
      if ((await builtHash()) !== hash) throw error;
    });
  } catch (error) {
    throw new ConsoleBuildError(failureReason(error));
  } finally {
    if (nodeEnv === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = nodeEnv;
    await rm(temporary, { recursive: true, force: true });
  }
  const ms = performance.now() - started;
  log(`admin console built in ${(ms / 1000).toFixed(1)} s`);
  return { built: true, ms };
}

/** Vite's multi-line, coloured report as one line: the first error and where it is. */
function failureReason(error: unknown): string {
  const text = String((error as Error)?.message ?? error).replace(/\u001b\[[0-9;]*m/g, '');
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !/^Build failed with \d+ errors?:$/.test(line));
  const where = /\[\s*([^\]\s]+:\d+:\d+)\s*\]/.exec(text)?.[1];
  const first = lines[0] ?? 'unknown error';
  return where ? `${first} (${where})` : first;
}

export class ConsoleBuildError extends Error {
  constructor(reason: string) {
    super(
      `the admin console could not be built: ${reason}; fix: correct it in web/, or run 'npm ci' if vite or react is missing`,
    );
    this.name = 'ConsoleBuildError';
  }
}

async function cli(argv: string[]): Promise<number> {
  let ifStale = false;
  try {
    ifStale = Boolean(
      parseArgs({ args: argv, options: { 'if-stale': { type: 'boolean' } }, strict: true }).values[
        'if-stale'
      ],
    );
  } catch (error) {
    console.error(`error: ${(error as Error).message}\nusage: npm run build:console -- [--if-stale]`);
    return 2;
  }
  try {
    await buildConsole({ ifStale });
    return 0;
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await cli(process.argv.slice(2));
}
