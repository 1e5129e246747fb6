/**
 * Step 1: esbuild bundles the agent and all its dependencies into one CommonJS file. Inside a SEA the
 * entry runs as CommonJS and its `require` loads built-in modules only, so everything else has to be in
 * this file; esbuild rejects top-level await in CJS output.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { BuildAgentError, fileSize, kib, type Log, REPO_ROOT } from './tools.js';

/** What the binary says about itself (`connector-agent version`). */
export interface BuildMeta {
  version: string;
  commit: string;
  buildTime: string;
}

/**
 * Prepended to the bundle. A CJS bundle has no `import.meta`, yet the agent (ESM source) may use
 * `import.meta.url`, e.g. in the usual "am I the main module" guard
 * `import.meta.url === pathToFileURL(process.argv[1]).href`. Inside a SEA, `__filename` is the
 * executable, while `process.argv[1]` is the name it was invoked by ("connector-agent" from PATH, a
 * symlink, "./connector-agent"), so that guard would be false whenever the agent is run from PATH.
 * We give `import.meta.url` the executable's file URL and set argv[1] to the executable's absolute path,
 * which is what argv[1] means in plain node (the absolute path of the main script), so the guard holds.
 */
const PRELUDE = [
  '/* connector-agent SEA prelude (scripts/build-agent.ts) */',
  "var __agentImportMetaUrl = require('node:url').pathToFileURL(__filename).href;",
  'process.argv[1] = __filename;',
].join('\n');

function esbuildOptions(entry: string, outfile: string, meta: BuildMeta) {
  return {
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // Lets an --entry outside the repo resolve the repo's dependencies.
    nodePaths: [path.join(REPO_ROOT, 'node_modules')],
    define: {
      // ws would try to require the optional native addons bufferutil / utf-8-validate.
      'process.env.WS_NO_BUFFER_UTIL': '"1"',
      'process.env.WS_NO_UTF_8_VALIDATE': '"1"',
      // Build metadata; the agent reads them guarded by `typeof __AGENT_VERSION__ !== 'undefined'`.
      __AGENT_VERSION__: JSON.stringify(meta.version),
      __AGENT_COMMIT__: JSON.stringify(meta.commit),
      __AGENT_BUILD_TIME__: JSON.stringify(meta.buildTime),
      // See PRELUDE.
      'import.meta.url': '__agentImportMetaUrl',
      'import.meta.filename': '__filename',
      'import.meta.dirname': '__dirname',
    },
    banner: { js: PRELUDE },
    metafile: true,
    logLevel: 'silent',
  } satisfies esbuild.BuildOptions;
}

/** Bundles `entry` into `outfile`; returns its size and the packages that weigh most in it. */
export async function bundleAgent(
  entry: string,
  outfile: string,
  meta: BuildMeta,
  log: Log,
): Promise<{ bytes: number; largest: string }> {
  let result: esbuild.BuildResult<{ metafile: true }>;
  try {
    result = await esbuild.build(esbuildOptions(entry, outfile, meta));
  } catch (error) {
    const failure = error as esbuild.BuildFailure;
    if (Array.isArray(failure.errors)) {
      const text = await esbuild.formatMessages(failure.errors, { kind: 'error', color: false });
      throw new BuildAgentError(`esbuild failed with ${failure.errors.length} error(s):\n${text.join('')}`);
    }
    throw error;
  }
  if (result.warnings.length > 0) {
    const text = await esbuild.formatMessages(result.warnings.slice(0, 10), {
      kind: 'warning',
      color: false,
    });
    log(`      ${result.warnings.length} esbuild warning(s):`);
    for (const line of text.join('').trimEnd().split('\n')) log(`      ${line}`);
  }
  return { bytes: fileSize(outfile), largest: largestInputs(result.metafile, 5) };
}

/** "ws 130 KiB, systeminformation 500 KiB, ..." grouped by package, from esbuild's metafile. */
function largestInputs(metafile: esbuild.Metafile, count: number): string {
  const output = Object.values(metafile.outputs)[0];
  if (!output) return '-';
  const byGroup = new Map<string, number>();
  for (const [file, info] of Object.entries(output.inputs)) {
    const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file.replaceAll('\\', '/'));
    const group = match?.[1] ?? '(own code)';
    byGroup.set(group, (byGroup.get(group) ?? 0) + info.bytesInOutput);
  }
  return [...byGroup.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([group, bytes]) => `${group} ${kib(bytes)}`)
    .join(', ');
}

/** The package version, the git commit and the build time (SOURCE_DATE_EPOCH if set, else now). */
export function buildMeta(buildTime?: Date): BuildMeta {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
    version?: unknown;
  };
  const version = typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' });
  const commit = git.status === 0 && git.stdout.trim() ? git.stdout.trim() : 'unknown';
  // SOURCE_DATE_EPOCH (seconds) makes the embedded time reproducible, as with other build tools.
  const epoch = process.env.SOURCE_DATE_EPOCH;
  const time = buildTime ?? (epoch && /^\d+$/.test(epoch) ? new Date(Number(epoch) * 1000) : new Date());
  return { version, commit, buildTime: time.toISOString() };
}
